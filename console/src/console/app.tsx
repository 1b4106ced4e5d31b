// The operator console: sign-in, then devices and the bike-share map.
import type { VNode } from "preact";
import { useEffect, useState } from "preact/hooks";
import { LangSwitch, t, useLang } from "../common/i18n";
import { Link, useRoute } from "../common/router";
import { currentAuth, restore, signOut, subscribeLogout, type Auth } from "./auth";
import { DevicePage } from "./device";
import { DeviceList } from "./devices";
import { FleetMap } from "./fleetmap";
import { Login } from "./login";

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
  else if (section === "bikeshare")
    page = <Lazy key="bikeshare" load={() => import("./bikeshare")} show={(m) => <m.BikeShare route={route.slice(1)} />} />;
  else if (section === "devices" && id) page = <DevicePage id={id} key={id} />;
  else if (section === "alarms") page = <Lazy key="alarms" load={() => import("./alarms")} show={(m) => <m.AlarmList />} />;
  else if (section === "rules" && id)
    page = (
      <Lazy key={`rules/${id}`} load={() => import("./rules")} show={(m) => <m.RuleEditor id={id === "new" ? null : id} />} />
    );
  else if (section === "rules") page = <Lazy key="rules" load={() => import("./rules")} show={(m) => <m.RuleList />} />;
  else if (section === "users") page = <Lazy key="users" load={() => import("./users")} show={(m) => <m.UsersPage />} />;
  else if (section === "account") page = <Lazy key="account" load={() => import("./users")} show={(m) => <m.AccountPage />} />;
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
          {/* API keys too: the console cannot tell an admin key; the page shows the API's 403. */}
          {(auth.kind === "key" || auth.role === "admin") && (
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
      <main class={section === "map" || (section === "bikeshare" && (!id || id === "zones" || id === "rebalancing")) ? "main main-map" : "main"}>
        {page}
      </main>
    </div>
  );
}

/** A screen whose code is fetched when it is first opened, so the first load stays small. */
function Lazy<M>(props: { load: () => Promise<M>; show: (m: M) => VNode }) {
  const [mod, setMod] = useState<{ m: M } | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    props.load().then(
      (m) => live && setMod({ m }),
      (e) => live && setFailed(String(e)),
    );
    return () => {
      live = false;
    };
  }, []);
  if (failed) return <p class="error">{t("common.error", { detail: failed })}</p>;
  return mod ? props.show(mod.m) : <p class="muted">{t("common.loading")}</p>;
}
