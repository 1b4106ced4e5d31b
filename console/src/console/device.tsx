// One device: connection, latest values, a telemetry chart, twin, commands, credentials.
// Latest values and presence refresh every few seconds while the page is open.
import { useEffect, useState } from "preact/hooks";
import { errorText } from "../common/api";
import { fmtTime, t, type MsgKey } from "../common/i18n";
import { api } from "./auth";
import { TelemetryChart } from "./chart";
import { Presence, type Device } from "./devices";

interface Latest {
  values: Record<string, { ts: number; value: unknown }>;
  units?: Record<string, string>;
}
interface Status {
  online: boolean;
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
export interface Command {
  id: string;
  name: string;
  params: unknown;
  status: string;
  response: unknown;
  created_at: number;
}

const REFRESH_MS = 5000;

export function DevicePage({ id }: { id: string }) {
  const path = `/api/v1/devices/${encodeURIComponent(id)}`;
  const [device, setDevice] = useState<Device | null>(null);
  const [latest, setLatest] = useState<Latest | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [twin, setTwin] = useState<Twin | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    const load = () => {
      Promise.all([
        api<Device>(path),
        api<Latest>(`${path}/telemetry/latest`),
        api<Status>(`${path}/status`).catch(() => null),
        api<Twin>(`${path}/twin`).catch(() => null),
      ])
        .then(([d, l, s, tw]) => {
          if (!live) return;
          setDevice(d);
          setLatest(l);
          setStatus(s);
          setTwin(tw);
          setError(null);
        })
        .catch((e) => live && setError(errorText(e)));
    };
    load();
    const h = setInterval(load, REFRESH_MS);
    return () => {
      live = false;
      clearInterval(h);
    };
  }, [path]);

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
        <Presence device={{ ...device, connected: status?.online ?? device.connected }} />
        {device.profile && <span class="chip">{device.profile}</span>}
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
                {Object.entries(latest.values).map(([k, v]) => (
                  <tr>
                    <td>{k}</td>
                    <td class="num">
                      {String(v.value)}
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
          <Credentials id={device.id} path={path} />
        </div>
      </div>
      {numericKeys.length > 0 && (
        <div class="card">
          <h2>{t("device.chart")}</h2>
          <TelemetryChart deviceId={device.id} keys={numericKeys} />
        </div>
      )}
      <div class="cards">
        <Commands path={path} />
        <div class="card">
          <h2>{t("device.twin")}</h2>
          {twin ? (
            <>
              <h3>{t("device.reported")}</h3>
              <pre class="json">{JSON.stringify(twin.reported, null, 2)}</pre>
              <h3>{t("device.desired")}</h3>
              <pre class="json">{JSON.stringify(twin.desired, null, 2)}</pre>
              <h3>{t("device.delta")}</h3>
              <pre class="json">{JSON.stringify(twin.delta, null, 2)}</pre>
            </>
          ) : (
            <p class="muted">—</p>
          )}
        </div>
      </div>
    </section>
  );
}

function statusText(s: string): string {
  const key = `status.${s}` as MsgKey;
  const text = t(key);
  return text === key || text === undefined ? s : text;
}

function Commands({ path }: { path: string }) {
  const [name, setName] = useState("ring");
  const [params, setParams] = useState("{}");
  const [timeout, setTimeoutMs] = useState(5000);
  const [busy, setBusy] = useState(false);
  const [answer, setAnswer] = useState<Command | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [recent, setRecent] = useState<Command[]>([]);

  const loadRecent = () =>
    api<Command[]>(`${path}/commands?limit=10`)
      .then(setRecent)
      .catch(() => undefined);
  useEffect(() => {
    loadRecent();
  }, [path]);

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
    setAnswer(null);
    try {
      const c = await api<Command>(`${path}/commands`, {
        method: "POST",
        body: { name: name.trim(), params: parsed, timeout_ms: timeout },
      });
      setAnswer(c);
      loadRecent();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="card">
      <h2>{t("device.commands")}</h2>
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
      {error && <p class="error">{error}</p>}
      {answer && (
        <div class="answer" data-testid="command-answer">
          <h3>
            {t("device.answer")}: <span class={`badge badge-${answer.status}`}>{statusText(answer.status)}</span>
          </h3>
          <pre class="json">{JSON.stringify(answer.response, null, 2)}</pre>
        </div>
      )}
      {recent.length > 0 && (
        <>
          <h3>{t("device.recentCommands")}</h3>
          <table class="grid compact">
            <tbody>
              {recent.map((c) => (
                <tr>
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

function Credentials({ id, path }: { id: string; path: string }) {
  const [token, setToken] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const rotate = async () => {
    if (!confirm(t("device.rotateConfirm", { id }))) return;
    try {
      const r = await api<{ token: string }>(`${path}/token`, { method: "POST" });
      setToken(r.token);
    } catch (e) {
      setError(errorText(e));
    }
  };
  return (
    <div>
      <h3>{t("device.credentials")}</h3>
      <button onClick={rotate}>{t("device.rotate")}</button>
      {token && (
        <p>
          {t("device.newToken")} <code class="secret">{token}</code>
        </p>
      )}
      {error && <p class="error">{error}</p>}
    </div>
  );
}
