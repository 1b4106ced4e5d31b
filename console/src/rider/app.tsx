// The rider app: sign up once, then the map, a ride, the wallet, trips and privacy.
import { useEffect, useState } from "preact/hooks";
import { LangSwitch, t, useLang } from "../common/i18n";
import { Link, useRoute } from "../common/router";
import { riderSession } from "./auth";
import { Home } from "./home";
import { Privacy } from "./privacy";
import { RidePage } from "./ride";
import { SignUp } from "./signup";
import { TripPage, Trips } from "./trips";
import { Wallet } from "./wallet";

export const BASE = "/rider/";

export function App() {
  useLang();
  const route = useRoute(BASE);
  const [session, setSession] = useState(riderSession);
  useEffect(() => {
    const f = () => setSession(riderSession());
    addEventListener("wulian-rider-signed-out", f);
    return () => removeEventListener("wulian-rider-signed-out", f);
  }, []);
  useEffect(() => {
    document.title = t("app.rider");
  });

  if (!session) return <SignUp onDone={() => setSession(riderSession())} />;

  const [section, id] = route;
  let page;
  if (section === "ride" && id) page = <RidePage id={id} key={id} />;
  else if (section === "wallet") page = <Wallet />;
  else if (section === "trips" && id) page = <TripPage id={id} key={id} />;
  else if (section === "trips") page = <Trips />;
  else if (section === "privacy") page = <Privacy />;
  else page = <Home />;

  const tab = (href: string, label: string, active: boolean, testid: string) => (
    <Link href={href} class={active ? "active" : ""} data-testid={testid}>
      {label}
    </Link>
  );
  return (
    <div class="rider-shell">
      <header class="rider-top">
        <span class="brand">{t("app.rider")}</span>
        <LangSwitch />
      </header>
      <main class="rider-main">{page}</main>
      <nav class="rider-tabs">
        {tab(BASE, t("rider.map"), !section, "tab-map")}
        {tab(`${BASE}trips`, t("rider.trips"), section === "trips", "tab-trips")}
        {tab(`${BASE}wallet`, t("rider.wallet"), section === "wallet", "tab-wallet")}
        {tab(`${BASE}privacy`, t("rider.settings"), section === "privacy", "tab-privacy")}
      </nav>
    </div>
  );
}
