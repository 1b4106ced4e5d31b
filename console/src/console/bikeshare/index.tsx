// The "Bike share" section: a second-level nav over zones, trips, riders, work orders and
// rebalancing. Each page asks the API for what the caller's role may see; the city's
// regulator has no riders page (the API refuses riders to the city).
import { t, type MsgKey } from "../../common/i18n";
import { Link } from "../../common/router";
import { BS, isRegulator } from "./common";
import { RebalancingPage } from "./rebalancing";
import { RiderList, RiderPage } from "./riders";
import { TripList, TripPage } from "./trips";
import { WorkOrderList } from "./workorders";
import { ZonesPage } from "./zones";

const TABS = ["zones", "trips", "riders", "work-orders", "rebalancing"] as const;

/** Whether the page is a full-height map (app.tsx drops the shell's padding for those, with
 * the same test inline so this module can load lazily). */
function bikeShareIsMap(route: string[]): boolean {
  return !route[0] || route[0] === "zones" || route[0] === "rebalancing";
}

export function BikeShare({ route }: { route: string[] }) {
  const [tab, id] = route;
  const tabs = TABS.filter((x) => x !== "riders" || !isRegulator());
  let page;
  if (tab === "trips" && id) page = <TripPage id={id} key={id} />;
  else if (tab === "trips") page = <TripList />;
  else if (tab === "riders" && id) page = <RiderPage id={id} key={id} />;
  else if (tab === "riders") page = <RiderList />;
  else if (tab === "work-orders") page = <WorkOrderList />;
  else if (tab === "rebalancing") page = <RebalancingPage />;
  else page = <ZonesPage />;
  const current = tab ?? "zones";
  return (
    <div class={bikeShareIsMap(route) ? "bs bs-full" : "bs"}>
      <nav class="subnav" data-testid="bs-nav">
        {tabs.map((x) => (
          <Link href={`${BS}${x}`} class={current === x ? "active" : ""} data-testid={`bs-nav-${x}`}>
            {t(`bs.nav.${x}` as MsgKey)}
          </Link>
        ))}
      </nav>
      <div class="bs-page">{page}</div>
    </div>
  );
}
