// One device: connection, latest values, a telemetry chart, twin, commands, credentials.
// Everything updates live from /api/v1/live (common/live.ts): new readings go into the table
// and onto the chart without reloading, connection changes, twin changes and command states
// as they happen. While the live socket is down the page polls every few seconds instead.
// Viewers (and city regulators) see everything but get no controls that change anything.
import { useEffect, useMemo, useState } from "preact/hooks";
import { errorText } from "../common/api";
import { fmtTime, t, type MsgKey } from "../common/i18n";
import { watchLive, type LiveCommand, type LiveEvent, type LiveState } from "../common/live";
import { api, currentAuth } from "./auth";
import { PointFeed, TelemetryChart } from "./chart";
import { Presence, type Device } from "./devices";

interface Latest {
  values: Record<string, { ts: number; value: unknown }>;
  units?: Record<string, string>;
}
interface Status {
  online: boolean;
  inactive?: boolean;
  last_seen_at: number | null;
  connected_at: number | null;
  connection: { transport?: string; remote_addr?: string; protocol?: string } | null;
}
interface Twin {
  desired: unknown;
  reported: unknown;
  delta: unknown;
  version: number;
}
export type Command = LiveCommand;

const POLL_MS = 5000;
const FINAL = new Set(["succeeded", "failed", "timed_out", "undelivered"]);

/** The API key of a console signed in with one (offered to the live socket). */
export function liveKey(): string | null {
  const a = currentAuth();
  return a?.kind === "key" ? a.key : null;
}

/** Whether the signed-in person may change things; the API enforces it, the UI follows. */
export function canWrite(): boolean {
  const a = currentAuth();
  return !(a?.kind === "session" && (a.role === "viewer" || a.role === "city_regulator"));
}

export function DevicePage({ id }: { id: string }) {
  const path = `/api/v1/devices/${encodeURIComponent(id)}`;
  const [device, setDevice] = useState<Device | null>(null);
  const [latest, setLatest] = useState<Latest | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [twin, setTwin] = useState<Twin | null>(null);
  const [commands, setCommands] = useState<Map<string, Command>>(new Map());
  const [error, setError] = useState<string | null>(null);
  const [liveState, setLiveState] = useState<LiveState>("connecting");
  const [reload, setReload] = useState(0);
  const feed = useMemo(() => new PointFeed(), [id]);
  const writable = canWrite();

  useEffect(() => {
    let alive = true;
    Promise.all([
      api<Device>(path),
      api<Latest>(`${path}/telemetry/latest`),
      api<Status>(`${path}/status`).catch(() => null),
      api<Twin>(`${path}/twin`).catch(() => null),
      api<Command[]>(`${path}/commands?limit=10`).catch(() => []),
    ])
      .then(([d, l, s, tw, cs]) => {
        if (!alive) return;
        setDevice(d);
        setLatest(l);
        setStatus(s);
        setTwin(tw);
        setCommands((m) => {
          const next = new Map(m);
          cs.forEach((c) => upsert(next, c));
          return next;
        });
        setError(null);
      })
      .catch((e) => alive && setError(errorText(e)));
    return () => {
      alive = false;
    };
  }, [path, reload]);

  // Poll only while the live socket is down.
  useEffect(() => {
    if (liveState === "live") return;
    const h = setInterval(() => setReload((n) => n + 1), POLL_MS);
    return () => clearInterval(h);
  }, [liveState]);

  useEffect(
    () =>
      watchLive(
        {
          devices: [id],
          onState: setLiveState,
          onResync: () => setReload((n) => n + 1),
          onEvent: (e: LiveEvent) => {
            switch (e.type) {
              case "telemetry":
                setLatest((l) => {
                  const values = { ...(l?.values ?? {}) };
                  for (const [k, v] of Object.entries(e.values)) {
                    if (!values[k] || values[k].ts <= e.ts) values[k] = { ts: e.ts, value: v };
                  }
                  return { ...l, values };
                });
                feed.push({ ts: e.ts, values: e.values });
                return;
              case "status":
                setStatus((s) => ({
                  connection: null,
                  connected_at: null,
                  ...s,
                  online: e.online,
                  inactive: e.inactive,
                  last_seen_at: e.last_seen_at,
                  ...(e.change === "connected" ? { connected_at: e.at } : {}),
                }));
                // The new connection's details (transport, address) are in the status resource.
                if (e.change === "connected") {
                  api<Status>(`${path}/status`).then(setStatus).catch(() => undefined);
                }
                return;
              case "twin":
                setTwin({ desired: e.desired, reported: e.reported, delta: e.delta, version: e.version });
                return;
              case "command":
                setCommands((m) => {
                  const next = new Map(m);
                  upsert(next, e.command);
                  return next;
                });
                return;
            }
          },
        },
        liveKey,
      ),
    [id, path, feed],
  );

  if (error && !device) return <p class="error">{t("common.error", { detail: error })}</p>;
  if (!device || !latest) return <p class="muted">{t("common.loading")}</p>;

  const numericKeys = Object.entries(latest.values)
    .filter(([, v]) => typeof v.value === "number")
    .map(([k]) => k)
    .sort();

  return (
    <section class="device">
      <div class="toolbar">
        <h1 data-testid="device-title">{device.id}</h1>
        <span class="muted">{device.name}</span>
        <span data-testid="device-presence">
          <Presence device={{ ...device, connected: status?.online ?? device.connected }} />
        </span>
        {device.profile && <span class="chip">{device.profile}</span>}
        <span class="spacer" />
        <LiveBadge state={liveState} />
      </div>
      <div class="cards">
        <div class="card">
          <h2>{t("device.latest")}</h2>
          {Object.keys(latest.values).length === 0 ? (
            <p class="muted">{t("device.noValues")}</p>
          ) : (
            <table class="grid compact" data-testid="latest-values">
              <thead>
                <tr>
                  <th>{t("device.key")}</th>
                  <th>{t("device.value")}</th>
                  <th>{t("device.time")}</th>
                </tr>
              </thead>
              <tbody>
                {Object.entries(latest.values)
                  .sort(([a], [b]) => a.localeCompare(b))
                  .map(([k, v]) => (
                    // A new key per reading replays the row's highlight.
                    <tr key={`${k}@${v.ts}`} class="live-row" data-key={k}>
                      <td>{k}</td>
                      <td class="num">
                        {typeof v.value === "object" ? JSON.stringify(v.value) : String(v.value)}
                        {latest.units?.[k] ? ` ${latest.units[k]}` : ""}
                      </td>
                      <td class="muted">{fmtTime(v.ts)}</td>
                    </tr>
                  ))}
              </tbody>
            </table>
          )}
        </div>
        <div class="card">
          <h2>{t("device.status")}</h2>
          <dl class="facts">
            <dt>{t("device.lastSeen")}</dt>
            <dd>{fmtTime(status?.last_seen_at)}</dd>
            <dt>{t("device.connectedSince")}</dt>
            <dd>{status?.online ? fmtTime(status.connected_at) : "—"}</dd>
            <dt>{t("device.transport")}</dt>
            <dd>
              {status?.connection
                ? `${status.connection.transport ?? ""} ${status.connection.protocol ?? ""}`
                : "—"}
            </dd>
            <dt>{t("device.remote")}</dt>
            <dd>{status?.connection?.remote_addr ?? "—"}</dd>
          </dl>
          <Credentials id={device.id} path={path} writable={writable} />
        </div>
      </div>
      {numericKeys.length > 0 && (
        <div class="card">
          <h2>{t("device.chart")}</h2>
          <TelemetryChart deviceId={device.id} keys={numericKeys} feed={feed} />
        </div>
      )}
      <div class="cards">
        <Commands path={path} commands={commands} setCommands={setCommands} writable={writable} live={liveState === "live"} />
        <TwinCard path={path} twin={twin} setTwin={setTwin} writable={writable} />
      </div>
    </section>
  );
}

/** Keeps the newest state of each command (events and answers may arrive in either order). */
function upsert(m: Map<string, Command>, c: Command) {
  const old = m.get(c.id);
  const newer = !old || c.updated_at > old.updated_at || (c.updated_at === old.updated_at && FINAL.has(c.status));
  if (newer && !(old && FINAL.has(old.status) && !FINAL.has(c.status))) m.set(c.id, c);
}

function LiveBadge({ state }: { state: LiveState }) {
  const text: Record<LiveState, MsgKey> = {
    live: "live.on",
    connecting: "live.connecting",
    offline: "live.off",
  };
  return (
    <span class={`live-badge live-${state}`} data-testid="live-state" data-state={state} title={t("live.hint")}>
      {t(text[state])}
    </span>
  );
}

function statusText(s: string): string {
  const key = `status.${s}` as MsgKey;
  const text = t(key);
  return text === key || text === undefined ? s : text;
}

function Commands({
  path,
  commands,
  setCommands,
  writable,
  live,
}: {
  path: string;
  commands: Map<string, Command>;
  setCommands: (f: (m: Map<string, Command>) => Map<string, Command>) => void;
  writable: boolean;
  live: boolean;
}) {
  const [name, setName] = useState("ring");
  const [params, setParams] = useState("{}");
  const [timeout, setTimeoutMs] = useState(5000);
  const [busy, setBusy] = useState(false);
  const [answerId, setAnswerId] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const merge = (c: Command) =>
    setCommands((m) => {
      const next = new Map(m);
      upsert(next, c);
      return next;
    });
  const answer = answerId ? commands.get(answerId) : undefined;

  // Without the live socket, ask for the answer until it is final.
  useEffect(() => {
    if (live || !answer || FINAL.has(answer.status)) return;
    const h = setTimeout(() => {
      api<Command>(`${path}/commands/${encodeURIComponent(answer.id)}`).then(merge).catch(() => undefined);
    }, 1000);
    return () => clearTimeout(h);
  }, [live, answer?.id, answer?.status, answer?.updated_at]);

  const send = async (e: Event) => {
    e.preventDefault();
    let parsed: unknown;
    try {
      parsed = JSON.parse(params || "{}");
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error();
    } catch {
      setError(t("device.invalidJson"));
      return;
    }
    setBusy(true);
    setError(null);
    setAnswerId(null);
    try {
      // Not waiting: the answer arrives over the live socket (or by polling, above).
      const c = await api<Command>(`${path}/commands`, {
        method: "POST",
        body: { name: name.trim(), params: parsed, timeout_ms: timeout, wait: false },
      });
      merge(c);
      setAnswerId(c.id);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  const recent = [...commands.values()].sort((a, b) => b.created_at - a.created_at).slice(0, 10);
  const waiting = !!answer && !FINAL.has(answer.status);

  return (
    <div class="card">
      <h2>{t("device.commands")}</h2>
      {writable ? (
        <form class="command-form" onSubmit={send}>
          <label>
            {t("device.commandName")}
            <input
              list="command-names"
              data-testid="command-name"
              value={name}
              onInput={(e) => setName(e.currentTarget.value)}
              required
            />
            <datalist id="command-names">
              {["ring", "locate", "unlock", "lock", "reboot"].map((n) => (
                <option value={n} />
              ))}
            </datalist>
          </label>
          <label>
            {t("device.commandTimeout")}
            <input
              type="number"
              min={100}
              max={300000}
              step={100}
              value={timeout}
              onInput={(e) => setTimeoutMs(Number(e.currentTarget.value))}
            />
          </label>
          <label class="wide">
            {t("device.commandParams")}
            <textarea rows={3} value={params} onInput={(e) => setParams(e.currentTarget.value)} />
          </label>
          <button class="primary" type="submit" disabled={busy} data-testid="command-send">
            {busy ? t("device.sending") : t("device.send")}
          </button>
        </form>
      ) : (
        <p class="muted" data-testid="read-only">{t("device.readOnly")}</p>
      )}
      {error && <p class="error">{error}</p>}
      {answer && (
        <div class="answer" data-testid="command-answer" data-status={answer.status}>
          <h3>
            {t("device.answer")}: <span class={`badge badge-${answer.status}`}>{statusText(answer.status)}</span>
            {waiting && <span class="muted"> {t("device.waiting")}</span>}
          </h3>
          <pre class="json">{JSON.stringify(answer.response, null, 2)}</pre>
        </div>
      )}
      {recent.length > 0 && (
        <>
          <h3>{t("device.recentCommands")}</h3>
          <table class="grid compact" data-testid="recent-commands">
            <tbody>
              {recent.map((c) => (
                <tr key={c.id}>
                  <td class="muted">{fmtTime(c.created_at)}</td>
                  <td>{c.name}</td>
                  <td>
                    <span class={`badge badge-${c.status}`}>{statusText(c.status)}</span>
                  </td>
                  <td class="mono clip">{c.response ? JSON.stringify(c.response) : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function isObject(v: unknown): v is Record<string, Json> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function hasNull(v: unknown): boolean {
  if (v === null) return true;
  if (Array.isArray(v)) return v.some(hasNull);
  if (isObject(v)) return Object.values(v).some(hasNull);
  return false;
}

/** The RFC 7386 merge patch that turns `from` into `to` (removed members become null). */
export function mergePatch(from: unknown, to: Record<string, Json>): Record<string, Json> {
  const old = isObject(from) ? from : {};
  const patch: Record<string, Json> = {};
  for (const [k, v] of Object.entries(to)) {
    if (isObject(v) && isObject(old[k])) {
      const inner = mergePatch(old[k], v);
      if (Object.keys(inner).length) patch[k] = inner;
    } else if (JSON.stringify(old[k]) !== JSON.stringify(v)) {
      patch[k] = v;
    }
  }
  for (const k of Object.keys(old)) if (!(k in to)) patch[k] = null;
  return patch;
}

/** Why `text` is not a valid desired document, or null. */
function desiredError(text: string): string | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return t("device.twinInvalidJson", { detail: (e as Error).message });
  }
  if (!isObject(v)) return t("device.twinNotObject");
  if (hasNull(v)) return t("device.twinNull");
  return null;
}

function TwinCard({
  path,
  twin,
  setTwin,
  writable,
}: {
  path: string;
  twin: Twin | null;
  setTwin: (t: Twin) => void;
  writable: boolean;
}) {
  const [editing, setEditing] = useState(false);
  // The desired document the edit started from: the patch is computed against it, so members
  // someone else changed meanwhile and this edit did not touch are kept.
  const [base, setBase] = useState<unknown>(null);
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const invalid = editing ? desiredError(text) : null;

  const edit = () => {
    const desired = twin?.desired ?? {};
    setBase(desired);
    setText(JSON.stringify(desired, null, 2));
    setError(null);
    setEditing(true);
  };
  const save = async (e: Event) => {
    e.preventDefault();
    if (invalid) return;
    const patch = mergePatch(base, JSON.parse(text) as Record<string, Json>);
    if (Object.keys(patch).length === 0) {
      setEditing(false);
      return;
    }
    setBusy(true);
    setError(null);
    try {
      setTwin(await api<Twin>(`${path}/twin/desired`, { method: "PATCH", body: patch }));
      setEditing(false);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="card">
      <h2>
        {t("device.twin")}
        {twin && <span class="muted small"> v{twin.version}</span>}
      </h2>
      {twin ? (
        <>
          <h3>{t("device.reported")}</h3>
          <pre class="json" data-testid="twin-reported">{JSON.stringify(twin.reported, null, 2)}</pre>
          <h3>{t("device.desired")}</h3>
          {editing ? (
            <form class="twin-form" onSubmit={save}>
              <textarea
                rows={8}
                class={`mono${invalid ? " invalid" : ""}`}
                data-testid="twin-desired-editor"
                aria-invalid={invalid ? "true" : "false"}
                value={text}
                onInput={(e) => setText(e.currentTarget.value)}
              />
              {(invalid || error) && (
                <p class="error" data-testid="twin-error">
                  {invalid ?? error}
                </p>
              )}
              <p class="muted small">{t("device.twinHint")}</p>
              <div class="row">
                <button class="primary" type="submit" disabled={busy || !!invalid} data-testid="twin-save">
                  {t("common.save")}
                </button>
                <button type="button" onClick={() => setEditing(false)}>
                  {t("common.cancel")}
                </button>
              </div>
            </form>
          ) : (
            <>
              <pre class="json" data-testid="twin-desired">{JSON.stringify(twin.desired, null, 2)}</pre>
              {writable && (
                <button onClick={edit} data-testid="twin-edit">
                  {t("device.twinEdit")}
                </button>
              )}
            </>
          )}
          <h3>{t("device.delta")}</h3>
          <pre class="json" data-testid="twin-delta">{JSON.stringify(twin.delta, null, 2)}</pre>
        </>
      ) : (
        <p class="muted">—</p>
      )}
    </div>
  );
}

const GRACE: [MsgKey, number][] = [
  ["device.graceNone", 0],
  ["device.grace1h", 3600],
  ["device.grace24h", 86400],
];

function Credentials({ id, path, writable }: { id: string; path: string; writable: boolean }) {
  const [confirming, setConfirming] = useState(false);
  const [grace, setGrace] = useState(0);
  const [token, setToken] = useState<string | null>(null);
  const [copied, setCopied] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const rotate = async () => {
    setBusy(true);
    setError(null);
    try {
      const r = await api<{ token: string }>(`${path}/token${grace ? `?grace_s=${grace}` : ""}`, { method: "POST" });
      setToken(r.token);
      setCopied(false);
      setConfirming(false);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const copy = async () => {
    if (!token) return;
    try {
      await navigator.clipboard.writeText(token);
      setCopied(true);
    } catch {
      // No clipboard (plain http on a LAN): select the text for Ctrl+C instead.
      const el = document.querySelector<HTMLElement>("[data-testid=new-token]");
      if (el) getSelection()?.selectAllChildren(el);
    }
  };

  return (
    <div>
      <h3>{t("device.credentials")}</h3>
      {writable && !confirming && (
        <button onClick={() => setConfirming(true)} data-testid="token-rotate">
          {t("device.rotate")}
        </button>
      )}
      {writable && confirming && (
        <div class="confirm" data-testid="rotate-panel">
          <p class="warn">{t("device.rotateConfirm", { id })}</p>
          <label>
            {t("device.grace")}{" "}
            <select value={grace} onChange={(e) => setGrace(Number(e.currentTarget.value))}>
              {GRACE.map(([label, s]) => (
                <option value={s}>{t(label)}</option>
              ))}
            </select>
          </label>
          <div class="row">
            <button class="danger" disabled={busy} onClick={rotate} data-testid="rotate-confirm">
              {t("device.rotateNow")}
            </button>
            <button onClick={() => setConfirming(false)}>{t("common.cancel")}</button>
          </div>
        </div>
      )}
      {token && (
        <div class="token-once" data-testid="token-panel">
          <p class="warn">{t("device.tokenWarning")}</p>
          <p>
            {t("device.newToken")} <code class="secret" data-testid="new-token">{token}</code>{" "}
            <button onClick={copy} data-testid="token-copy">
              {copied ? t("device.copied") : t("device.copy")}
            </button>
          </p>
          <button class="link" onClick={() => setToken(null)}>
            {t("device.tokenHide")}
          </button>
        </div>
      )}
      {!writable && <p class="muted small">{t("device.credentialsReadOnly")}</p>}
      {error && <p class="error">{error}</p>}
    </div>
  );
}
