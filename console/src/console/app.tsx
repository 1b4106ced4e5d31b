// The operator console: sign-in, then devices and the bike-share map.
import { useEffect, useState } from "preact/hooks";
import { LangSwitch, t, useLang } from "../common/i18n";
import { Link, useRoute } from "../common/router";
import { AlarmList } from "./alarms";
import { BikeShare, bikeShareIsMap } from "./bikeshare";
import { currentAuth, restore, signOut, subscribeLogout, type Auth } from "./auth";
import { DevicePage } from "./device";
import { DeviceList } from "./devices";
import { FleetMap } from "./fleetmap";
import { Login } from "./login";
import { RuleEditor, RuleList } from "./rules";
import { AccountPage, canAdmin, UsersPage } from "./users";

export const BASE = "/console/";

export function App() {
  useLang();
  const [auth, setAuth] = useState<Auth | null | undefined>(undefined);
  const route = useRoute(BASE);

  useEffect(() => {
    restore().then(setAuth);
    return subscribeLogout(() => setAuth(null));
  }, []);
  useEffect(() => {
    document.title = t("app.console");
  });

  if (auth === undefined) return <div class="splash">{t("common.loading")}</div>;
  if (auth === null) return <Login onDone={() => setAuth(currentAuth())} />;

  const [section, id] = route;
  let page;
  if (section === "map") page = <FleetMap />;
  else if (section === "bikeshare") page = <BikeShare route={route.slice(1)} />;
  else if (section === "devices" && id) page = <DevicePage id={id} key={id} />;
  else if (section === "alarms") page = <AlarmList />;
  else if (section === "rules" && id) page = <RuleEditor id={id === "new" ? null : id} key={id} />;
  else if (section === "rules") page = <RuleList />;
  else if (section === "users") page = <UsersPage />;
  else if (section === "account") page = <AccountPage />;
  else page = <DeviceList />;

  return (
    <div class="shell">
      <header class="topbar">
        <span class="brand">物联 wulian</span>
        <nav>
          <Link href={`${BASE}devices`} class={section === "devices" || !section ? "active" : ""} data-testid="nav-devices">
            {t("nav.devices")}
          </Link>
          <Link href={`${BASE}map`} class={section === "map" ? "active" : ""} data-testid="nav-map">
            {t("nav.map")}
          </Link>
          <Link href={`${BASE}bikeshare/zones`} class={section === "bikeshare" ? "active" : ""} data-testid="nav-bikeshare">
            {t("bs.nav.title")}
          </Link>
          <Link href={`${BASE}alarms`} class={section === "alarms" ? "active" : ""} data-testid="nav-alarms">
            {t("nav.alarms")}
          </Link>
          <Link href={`${BASE}rules`} class={section === "rules" ? "active" : ""} data-testid="nav-rules">
            {t("nav.rules")}
          </Link>
          {canAdmin(auth) && (
            <Link href={`${BASE}users`} class={section === "users" ? "active" : ""} data-testid="nav-users">
              {t("nav.users")}
            </Link>
          )}
        </nav>
        <span class="spacer" />
        <span class="who">
          {auth.kind === "session" ? (
            <Link href={`${BASE}account`} data-testid="nav-account">
              {t("login.signedInAs", { user: auth.user, tenant: auth.tenant, role: auth.role })}
            </Link>
          ) : (
            t("login.apiKeyUser")
          )}
        </span>
        <LangSwitch />
        <button class="link" onClick={() => signOut()}>
          {t("common.signOut")}
        </button>
      </header>
      <main class={section === "map" || (section === "bikeshare" && bikeShareIsMap(route.slice(1))) ? "main main-map" : "main"}>
        {page}
      </main>
    </div>
  );
}
