// The device list: search, filter by profile, page with the API's cursor. The server searches
// and pages (one request of 50 rows per view), so 10,000 devices cost what 50 do in the
// browser (tests/devices.spec.ts measures it). Connection dots update live: the page watches
// every device's status changes over /api/v1/live.
import { useEffect, useState } from "preact/hooks";
import { errorText, qs } from "../common/api";
import { t } from "../common/i18n";
import { watchLive } from "../common/live";
import { Link, navigate } from "../common/router";
import { api, currentAuth } from "./auth";

export interface Device {
  id: string;
  name: string | null;
  profile: string | null;
  labels: Record<string, string>;
  disabled: boolean;
  connected?: boolean;
}

interface Page {
  devices: Device[];
  next_cursor: string | null;
  total: number;
}

const PAGE = 50;

export function DeviceList() {
  const params = new URLSearchParams(location.search);
  const [search, setSearch] = useState(params.get("search") ?? "");
  const [query, setQuery] = useState(search);
  const [profile, setProfile] = useState(params.get("profile") ?? "");
  const [profiles, setProfiles] = useState<string[]>([]);
  // cursors[i] opens page i; page 0 has none.
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [page, setPage] = useState<Page | null>(null);
  const [error, setError] = useState<string | null>(null);
  // Connection changes heard since the page was loaded, by device id.
  const [online, setOnline] = useState<Record<string, boolean>>({});
  const [reload, setReload] = useState(0);

  useEffect(
    () =>
      watchLive(
        {
          allStatus: true,
          onResync: () => setReload((n) => n + 1),
          onEvent: (e) => {
            if (e.type === "status") setOnline((m) => ({ ...m, [e.device]: e.online }));
          },
        },
        () => {
          const a = currentAuth();
          return a?.kind === "key" ? a.key : null;
        },
      ),
    [],
  );

  useEffect(() => {
    api<{ id: string }[] | { profiles: { id: string }[] }>("/api/v1/profiles")
      .then((p) => setProfiles((Array.isArray(p) ? p : p.profiles).map((x) => x.id)))
      .catch(() => setProfiles([]));
  }, []);

  // Debounce typing; reset paging when the filter changes.
  useEffect(() => {
    const h = setTimeout(() => {
      // The first render already loads this search: no second request for it.
      if (search === query) return;
      setQuery(search);
      setCursors([undefined]);
    }, 250);
    return () => clearTimeout(h);
  }, [search]);

  useEffect(() => {
    const ctl = new AbortController();
    const cursor = cursors[cursors.length - 1];
    history.replaceState(null, "", location.pathname + qs({ search: query, profile }));
    api<Page>(`/api/v1/devices${qs({ limit: PAGE, search: query, profile, cursor })}`, { signal: ctl.signal })
      .then((p) => {
        setPage(p);
        setOnline({});
        setError(null);
      })
      .catch((e) => {
        if (e.name !== "AbortError") setError(errorText(e));
      });
    return () => ctl.abort();
  }, [query, profile, cursors, reload]);

  return (
    <section>
      <div class="toolbar">
        <h1>{t("devices.title")}</h1>
        <input
          type="search"
          class="search"
          data-testid="device-search"
          placeholder={t("devices.search")}
          value={search}
          onInput={(e) => setSearch(e.currentTarget.value)}
        />
        <select
          aria-label={t("devices.profile")}
          value={profile}
          onChange={(e) => {
            setProfile(e.currentTarget.value);
            setCursors([undefined]);
          }}
        >
          <option value="">{t("devices.allProfiles")}</option>
          {profiles.map((p) => (
            <option value={p}>{p}</option>
          ))}
        </select>
        <span class="muted" data-testid="device-total" data-total={page?.total}>
          {page && t("devices.total", { count: page.total.toLocaleString() })}
        </span>
      </div>
      {error && <p class="error">{t("common.error", { detail: error })}</p>}
      <table class="grid" data-testid="device-table">
        <thead>
          <tr>
            <th>{t("devices.id")}</th>
            <th>{t("devices.name")}</th>
            <th>{t("devices.profile")}</th>
            <th>{t("devices.connection")}</th>
            <th>{t("devices.labels")}</th>
          </tr>
        </thead>
        <tbody>
          {page?.devices.map((d) => (
            <tr key={d.id} class="clickable" onClick={() => navigate(`/console/devices/${encodeURIComponent(d.id)}`)}>
              <td>
                <Link href={`/console/devices/${encodeURIComponent(d.id)}`}>{d.id}</Link>
              </td>
              <td>{d.name}</td>
              <td>{d.profile}</td>
              <td data-testid={`presence-${d.id}`}>
                <Presence device={{ ...d, connected: online[d.id] ?? d.connected }} />
              </td>
              <td class="labels">
                {Object.entries(d.labels).map(([k, v]) => (
                  <span class="chip">
                    {k}={v}
                  </span>
                ))}
              </td>
            </tr>
          ))}
          {page && page.devices.length === 0 && (
            <tr>
              <td colSpan={5} class="muted">
                {t("devices.empty")}
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <div class="pager">
        <button disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
          {t("devices.prev")}
        </button>
        <span>{t("devices.page", { page: cursors.length })}</span>
        <button
          disabled={!page?.next_cursor}
          data-testid="device-next"
          onClick={() => page?.next_cursor && setCursors([...cursors, page.next_cursor])}
        >
          {t("devices.next")}
        </button>
      </div>
    </section>
  );
}

export function Presence({ device }: { device: { disabled?: boolean; connected?: boolean } }) {
  if (device.disabled) return <span class="dot dot-off">{t("devices.disabled")}</span>;
  return device.connected ? (
    <span class="dot dot-on">{t("devices.online")}</span>
  ) : (
    <span class="dot dot-off">{t("devices.offline")}</span>
  );
}
