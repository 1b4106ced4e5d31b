// Alarms: newest first, filtered by state, severity, device and type (all in the API's query),
// paged with the API's `before` time and `before_id`; acknowledge and clear for roles that may
// write; live over the alarm WebSocket.
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText, qs } from "../common/api";
import { fmtTime, t, type MsgKey } from "../common/i18n";
import { Link } from "../common/router";
import { api, currentAuth } from "./auth";
import { canWrite, refusal } from "./users";

export interface Alarm {
  id: string;
  device_id: string;
  type: string;
  severity: string;
  status: string;
  source: string;
  details: Record<string, unknown>;
  count: number;
  created_at: number;
  updated_at: number;
  acknowledged_at: number | null;
  acknowledged_by: string | null;
  cleared_at: number | null;
}

interface Filters {
  status: string;
  severity: string;
  device: string;
  type: string;
}

/** Where a page starts: after the alarm created at `before` with id `beforeId` (the API's order
 * is newest first, then by id, so alarms of one millisecond split across pages are neither
 * skipped nor repeated). The first page has neither. */
interface Cursor {
  before?: number;
  beforeId?: string;
}

const PAGE = 50;
const STATUSES = ["open", "active", "acknowledged", "cleared", ""] as const;
export const SEVERITIES = ["critical", "major", "minor", "warning", "indeterminate"] as const;

function matches(a: Alarm, f: Filters): boolean {
  if (f.status === "open" && a.status === "cleared") return false;
  if (f.status && f.status !== "open" && a.status !== f.status) return false;
  if (f.severity && a.severity !== f.severity) return false;
  if (f.device && a.device_id !== f.device) return false;
  if (f.type && a.type !== f.type) return false;
  return true;
}

/** The API's order: newest first, then by id. */
function byApiOrder(x: Alarm, y: Alarm): number {
  return y.created_at - x.created_at || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0);
}

/** The cursor that continues after the last of `shown`. */
function cursorAfter(shown: Alarm[]): Cursor {
  const last = shown[shown.length - 1];
  return { before: last.created_at, beforeId: last.id };
}

/** One page, filtered by the server; one alarm more than a page tells whether another follows. */
async function loadPage(f: Filters, cursor: Cursor, signal: AbortSignal): Promise<{ alarms: Alarm[]; next: Cursor | null }> {
  const batch = await api<Alarm[]>(
    `/api/v1/alarms${qs({
      status: f.status,
      severity: f.severity,
      device_id: f.device,
      type: f.type,
      before: cursor.before,
      before_id: cursor.beforeId,
      limit: PAGE + 1,
    })}`,
    { signal },
  );
  const alarms = batch.slice(0, PAGE);
  return { alarms, next: batch.length > PAGE ? cursorAfter(alarms) : null };
}

/** `list` with the change `a` applied: updated in place, dropped when it left the filter
 * (acknowledged, cleared), or added in time order on the first page (the page stays a page, so
 * its next cursor moves). `newer`: a matching alarm not on this later page. */
function merge(
  list: Alarm[],
  a: Alarm,
  f: Filters,
  first: boolean,
): { list: Alarm[]; next?: Cursor; newer?: boolean } {
  const known = list.find((x) => x.id === a.id);
  if (known) {
    // A change older than what a page load brought is already in it.
    if (known.updated_at > a.updated_at) return { list };
    return { list: matches(a, f) ? list.map((x) => (x.id === a.id ? a : x)) : list.filter((x) => x.id !== a.id) };
  }
  if (!matches(a, f)) return { list };
  if (!first) return { list, newer: true };
  const grown = [a, ...list].sort(byApiOrder);
  if (grown.length <= PAGE) return { list: grown };
  const kept = grown.slice(0, PAGE);
  return { list: kept, next: cursorAfter(kept) };
}

type Live = "connecting" | "live" | "offline";

export function AlarmList() {
  const params = new URLSearchParams(location.search);
  const [filters, setFilters] = useState<Filters>({
    // "all" in the address is no status filter (the API's default).
    status: params.get("status") === "all" ? "" : (params.get("status") ?? "open"),
    severity: params.get("severity") ?? "",
    device: params.get("device") ?? "",
    type: params.get("type") ?? "",
  });
  const [draft, setDraft] = useState({ device: filters.device, type: filters.type });
  // cursors[i] opens page i; page 0 is the newest.
  const [cursors, setCursors] = useState<Cursor[]>([{}]);
  const [alarms, setAlarms] = useState<Alarm[] | null>(null);
  const [next, setNext] = useState<Cursor | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [live, setLive] = useState<Live>("connecting");
  const [newer, setNewer] = useState(0);
  const [fresh, setFresh] = useState<Set<string>>(new Set());
  const [open, setOpen] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [reload, setReload] = useState(0);
  const [events, setEvents] = useState(0);
  const writer = canWrite(currentAuth());
  const firstPage = cursors.length === 1;

  // Filters typed into text boxes apply after a pause.
  useEffect(() => {
    const h = setTimeout(() => {
      if (draft.device.trim() !== filters.device || draft.type.trim() !== filters.type) {
        setFilters({ ...filters, device: draft.device.trim(), type: draft.type.trim() });
        setCursors([{}]);
      }
    }, 300);
    return () => clearTimeout(h);
  }, [draft]);

  useEffect(() => {
    const ctl = new AbortController();
    history.replaceState(null, "", location.pathname + qs({ ...filters, status: filters.status || "all" }));
    pending.current = [];
    loadPage(filters, cursors[cursors.length - 1], ctl.signal)
      .then((p) => {
        let { alarms: list, next } = p;
        for (const a of pending.current ?? []) {
          const m = merge(list, a, filters, firstPage);
          list = m.list;
          if (m.next !== undefined) next = m.next;
        }
        pending.current = null;
        setAlarms(list);
        setNext(next);
        setError(null);
        if (firstPage) setNewer(0);
      })
      .catch((e) => {
        if (e.name !== "AbortError") setError(errorText(e));
      });
    return () => ctl.abort();
  }, [filters, cursors, reload]);

  // The live feed, kept in a ref so the socket's handler always sees the current view. Changes
  // that arrive while a page loads are applied to it when it comes (it may predate them).
  const view = useRef({ filters, firstPage });
  view.current = { filters, firstPage };
  const pending = useRef<Alarm[] | null>(null);
  const onChange = (a: Alarm) => {
    pending.current?.push(a);
    const { filters: f, firstPage: first } = view.current;
    setAlarms((list) => {
      if (!list) return list;
      const m = merge(list, a, f, first);
      if (m.next !== undefined) setNext(m.next);
      if (m.newer) setNewer((n) => n + 1);
      return m.list;
    });
    setFresh((s) => new Set(s).add(a.id));
    setTimeout(
      () =>
        setFresh((s) => {
          const n = new Set(s);
          n.delete(a.id);
          return n;
        }),
      3000,
    );
  };

  useEffect(() => {
    // A browser cannot put an API key on a WebSocket's headers: it offers it as a subprotocol.
    const auth = currentAuth();
    const protocols = auth?.kind === "key" ? ["wulian.alarms", `wulian.bearer.${auth.key}`] : [];
    let ws: WebSocket | null = null;
    let stopped = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let delay = 1000;
    const connect = () => {
      setLive("connecting");
      ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/alarms/ws`, protocols);
      ws.onopen = () => {
        delay = 1000;
        setLive("live");
        // Whatever changed while the socket was down.
        setReload((n) => n + 1);
      };
      ws.onmessage = (m) => {
        let msg: { change?: string; alarm?: Alarm; lagged?: number };
        try {
          msg = JSON.parse(String(m.data));
        } catch {
          return;
        }
        setEvents((n) => n + 1);
        if (msg.alarm) onChange(msg.alarm);
        else if (msg.lagged) setReload((n) => n + 1);
      };
      ws.onclose = () => {
        if (stopped) return;
        setLive("offline");
        retry = setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30_000);
      };
    };
    connect();
    return () => {
      stopped = true;
      clearTimeout(retry);
      ws?.close();
    };
  }, []);

  const act = async (a: Alarm, what: "ack" | "clear") => {
    setBusy(a.id);
    setError(null);
    try {
      const updated = await api<Alarm>(`/api/v1/alarms/${encodeURIComponent(a.id)}/${what}`, { method: "POST" });
      onChange(updated);
    } catch (e) {
      setError(refusal(e, "alarms.needWrite"));
    } finally {
      setBusy(null);
    }
  };

  const setFilter = (patch: Partial<Filters>) => {
    setFilters({ ...filters, ...patch });
    setCursors([{}]);
  };

  return (
    <section>
      <div class="toolbar">
        <h1>{t("alarms.title")}</h1>
        <select
          aria-label={t("alarms.state")}
          data-testid="alarm-status"
          value={filters.status}
          onChange={(e) => setFilter({ status: e.currentTarget.value })}
        >
          {STATUSES.map((s) => (
            <option value={s}>{t(s ? (`alarms.filter.${s}` as MsgKey) : "alarms.filter.all")}</option>
          ))}
        </select>
        <select
          aria-label={t("alarms.severity")}
          data-testid="alarm-severity"
          value={filters.severity}
          onChange={(e) => setFilter({ severity: e.currentTarget.value })}
        >
          <option value="">{t("alarms.allSeverities")}</option>
          {SEVERITIES.map((s) => (
            <option value={s}>{t(`alarms.severity.${s}` as MsgKey)}</option>
          ))}
        </select>
        <input
          type="search"
          aria-label={t("alarms.device")}
          placeholder={t("alarms.devicePlaceholder")}
          data-testid="alarm-device"
          value={draft.device}
          onInput={(e) => setDraft({ ...draft, device: e.currentTarget.value })}
        />
        <input
          type="search"
          aria-label={t("alarms.type")}
          placeholder={t("alarms.typePlaceholder")}
          data-testid="alarm-type"
          value={draft.type}
          onInput={(e) => setDraft({ ...draft, type: e.currentTarget.value })}
        />
        <span class="spacer" />
        <span class={`live live-${live}`} data-testid="alarm-live" data-state={live} data-events={events}>
          {t(`alarms.live.${live}` as MsgKey)}
        </span>
      </div>
      {!writer && <p class="muted">{t("alarms.readOnly")}</p>}
      {error && (
        <p class="error" role="alert" data-testid="alarm-error">
          {error}
        </p>
      )}
      {newer > 0 && (
        <p class="notice-bar">
          {t("alarms.newer", { count: newer })}{" "}
          <button class="link" onClick={() => setCursors([{}])}>
            {t("alarms.toNewest")}
          </button>
        </p>
      )}
      <table class="grid" data-testid="alarm-table">
        <thead>
          <tr>
            <th>{t("alarms.raisedAt")}</th>
            <th>{t("alarms.severity")}</th>
            <th>{t("alarms.device")}</th>
            <th>{t("alarms.type")}</th>
            <th>{t("alarms.state")}</th>
            <th class="num">{t("alarms.count")}</th>
            <th>{t("alarms.source")}</th>
            {writer && <th />}
          </tr>
        </thead>
        <tbody>
          {alarms?.map((a) => (
            <>
              <tr
                key={a.id}
                data-alarm={a.id}
                data-status={a.status}
                class={`clickable${fresh.has(a.id) ? " fresh" : ""}`}
                onClick={() => setOpen(open === a.id ? null : a.id)}
              >
                <td>{fmtTime(a.created_at)}</td>
                <td>
                  <span class={`sev sev-${a.severity}`}>{t(`alarms.severity.${a.severity}` as MsgKey)}</span>
                </td>
                <td onClick={(e) => e.stopPropagation()}>
                  <Link href={`/console/devices/${encodeURIComponent(a.device_id)}`}>{a.device_id}</Link>
                </td>
                <td>{a.type}</td>
                <td>
                  <span class={`badge state-${a.status}`} data-testid="alarm-state">
                    {t(`alarms.filter.${a.status}` as MsgKey)}
                  </span>
                </td>
                <td class="num">{a.count}</td>
                <td class="clip muted">{a.source}</td>
                {writer && (
                  <td onClick={(e) => e.stopPropagation()}>
                    <div class="row">
                      {a.status === "active" && (
                        <button disabled={busy === a.id} data-testid="alarm-ack" onClick={() => act(a, "ack")}>
                          {t("alarms.ack")}
                        </button>
                      )}
                      {a.status !== "cleared" && (
                        <button disabled={busy === a.id} data-testid="alarm-clear" onClick={() => act(a, "clear")}>
                          {t("alarms.clear")}
                        </button>
                      )}
                    </div>
                  </td>
                )}
              </tr>
              {open === a.id && (
                <tr class="detail-row">
                  <td colSpan={writer ? 8 : 7}>
                    <dl class="facts">
                      <dt>{t("alarms.id")}</dt>
                      <dd class="mono">{a.id}</dd>
                      <dt>{t("alarms.updatedAt")}</dt>
                      <dd>{fmtTime(a.updated_at)}</dd>
                      {a.acknowledged_at && (
                        <>
                          <dt>{t("alarms.acknowledged")}</dt>
                          <dd>
                            {fmtTime(a.acknowledged_at)} · {a.acknowledged_by}
                          </dd>
                        </>
                      )}
                      {a.cleared_at && (
                        <>
                          <dt>{t("alarms.clearedAt")}</dt>
                          <dd>{fmtTime(a.cleared_at)}</dd>
                        </>
                      )}
                      <dt>{t("alarms.details")}</dt>
                      <dd>
                        <pre class="json">{JSON.stringify(a.details, null, 2)}</pre>
                      </dd>
                    </dl>
                  </td>
                </tr>
              )}
            </>
          ))}
          {alarms && alarms.length === 0 && (
            <tr>
              <td colSpan={writer ? 8 : 7} class="muted">
                {t("alarms.empty")}
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <div class="pager">
        <button disabled={firstPage} onClick={() => setCursors(cursors.slice(0, -1))}>
          {t("devices.prev")}
        </button>
        <span>{t("devices.page", { page: cursors.length })}</span>
        <button disabled={!next} data-testid="alarm-next" onClick={() => next && setCursors([...cursors, next])}>
          {t("devices.next")}
        </button>
      </div>
    </section>
  );
}
