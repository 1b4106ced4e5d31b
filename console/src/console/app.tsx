// The operator console: sign-in, then devices and the bike-share map.
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
  else if (section === "devices" && id) page = <DevicePage id={id} key={id} />;
  else page = <DeviceList />;

  return (
    <div class="shell">
      <header class="topbar">
        <span class="brand">物联 wulian</span>
        <nav>
          <Link href={`${BASE}devices`} class={section !== "map" ? "active" : ""} data-testid="nav-devices">
            {t("nav.devices")}
          </Link>
          <Link href={`${BASE}map`} class={section === "map" ? "active" : ""} data-testid="nav-map">
            {t("nav.map")}
          </Link>
        </nav>
        <span class="spacer" />
        <span class="who">
          {auth.kind === "session"
            ? t("login.signedInAs", { user: auth.user, tenant: auth.tenant, role: auth.role })
            : t("login.apiKeyUser")}
        </span>
        <LangSwitch />
        <button class="link" onClick={() => signOut()}>
          {t("common.signOut")}
        </button>
      </header>
      <main class={section === "map" ? "main main-map" : "main"}>{page}</main>
    </div>
  );
}
