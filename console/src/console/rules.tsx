// Rules: the list with an enabled switch, an editor for the rule as the API takes it (id, SQL,
// actions as JSON) that shows the API's validation errors where they are, and a dry run on a
// sample message, the device's latest values, or (saved rules) the last hour of its telemetry.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, errorText } from "../common/api";
import { fmtTime, t, type MsgKey } from "../common/i18n";
import { Link, navigate } from "../common/router";
import { api, currentAuth, signOut } from "./auth";
import { canWrite, refusal } from "./users";

interface RuleStats {
  evaluated: number;
  matched: number;
  errors: number;
  last_error: string | null;
  tracked_devices: number;
}

interface Rule {
  id: string;
  name: string;
  description: string;
  sql: string;
  actions: unknown[];
  enabled: boolean;
  version: number;
  updated_at: number;
  stats: RuleStats | null;
}

interface DryRunResult {
  index: number;
  matched: boolean;
  output?: Record<string, unknown>;
  reason?: string;
  actions: ({ action: string } & Record<string, unknown>)[];
  action_errors?: string[];
}

interface ReplayResult {
  messages: number;
  matched: number;
  errors: number;
  actions: number;
  results: DryRunResult[];
}

/** A problem document with its `errors` (where a rule is wrong), which `ApiError` leaves out. */
class Problem extends ApiError {
  constructor(
    status: number,
    code: string,
    detail: string,
    readonly errors: Record<string, unknown>[],
  ) {
    super(status, code, detail);
  }
}

/** `api()` for calls whose refusals point into the rule: the problem's `errors` are kept. */
async function ruleCall<T>(path: string, method: string, body: unknown, headers: Record<string, string> = {}) {
  const auth = currentAuth();
  const h: Record<string, string> = { Accept: "application/json", "Content-Type": "application/json", ...headers };
  if (auth?.kind === "key") h.Authorization = `Bearer ${auth.key}`;
  else if (auth?.kind === "session") h["X-CSRF-Token"] = auth.csrf;
  let res: Response;
  try {
    res = await fetch(path, { method, headers: h, body: JSON.stringify(body), credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, "network_error", String(e));
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    if (res.status === 401) void signOut();
    const p = (json ?? {}) as { code?: string; detail?: string; title?: string; errors?: Record<string, unknown>[] };
    throw new Problem(res.status, p.code ?? `http_${res.status}`, p.detail ?? p.title ?? res.statusText, p.errors ?? []);
  }
  return json as T;
}

/** The topic filter of a rule's FROM, for the list. */
function fromOf(sql: string): string {
  return /\bFROM\s+'((?:[^']|'')*)'/i.exec(sql)?.[1]?.replace(/''/g, "'") ?? "";
}

export function RuleList() {
  const [rules, setRules] = useState<Rule[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const writer = canWrite(currentAuth());

  useEffect(() => {
    api<Rule[]>("/api/v1/rules")
      .then((r) => setRules(r.sort((a, b) => a.id.localeCompare(b.id))))
      .catch((e) => setError(errorText(e)));
  }, []);

  const toggle = async (r: Rule) => {
    setBusy(r.id);
    setError(null);
    try {
      const updated = await api<Rule>(
        `/api/v1/rules/${encodeURIComponent(r.id)}/${r.enabled ? "disable" : "enable"}`,
        { method: "POST" },
      );
      setRules((list) => list?.map((x) => (x.id === r.id ? updated : x)) ?? null);
    } catch (e) {
      setError(refusal(e, "rules.needWrite"));
    } finally {
      setBusy(null);
    }
  };

  return (
    <section>
      <div class="toolbar">
        <h1>{t("rules.title")}</h1>
        <span class="muted">{rules && t("rules.count", { count: rules.length })}</span>
        <span class="spacer" />
        {writer && (
          <button class="primary" data-testid="rule-new" onClick={() => navigate("/console/rules/new")}>
            {t("rules.new")}
          </button>
        )}
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <table class="grid" data-testid="rule-table">
        <thead>
          <tr>
            <th>{t("rules.enabled")}</th>
            <th>{t("rules.id")}</th>
            <th>{t("rules.name")}</th>
            <th>{t("rules.from")}</th>
            <th class="num">{t("rules.actions")}</th>
            <th class="num">{t("rules.evaluated")}</th>
            <th class="num">{t("rules.matched")}</th>
            <th class="num">{t("rules.errors")}</th>
            <th>{t("rules.updated")}</th>
          </tr>
        </thead>
        <tbody>
          {rules?.map((r) => (
            <tr key={r.id} data-rule={r.id}>
              <td>
                <label class="switch">
                  <input
                    type="checkbox"
                    role="switch"
                    aria-label={t("rules.enabledOf", { id: r.id })}
                    checked={r.enabled}
                    disabled={!writer || busy === r.id}
                    onChange={() => toggle(r)}
                  />
                  <span>{r.enabled ? t("rules.on") : t("rules.off")}</span>
                </label>
              </td>
              <td>
                <Link href={`/console/rules/${encodeURIComponent(r.id)}`}>{r.id}</Link>
              </td>
              <td>{r.name}</td>
              <td class="mono">{fromOf(r.sql)}</td>
              <td class="num">{Array.isArray(r.actions) ? r.actions.length : 0}</td>
              <td class="num">{r.stats?.evaluated ?? "—"}</td>
              <td class="num">{r.stats?.matched ?? "—"}</td>
              <td class="num" title={r.stats?.last_error ?? undefined}>
                {r.stats?.errors ?? "—"}
              </td>
              <td>{fmtTime(r.updated_at)}</td>
            </tr>
          ))}
          {rules && rules.length === 0 && (
            <tr>
              <td colSpan={9} class="muted">
                {t("rules.empty")}
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}

const TEMPLATE_SQL = "SELECT device_id, temp\nFROM 'devices/+/telemetry'\nWHERE temp > 50";
const TEMPLATE_ACTIONS = JSON.stringify([{ action: "alarm", type: "overheat", severity: "major", clear_when_false: true }], null, 2);

/** Where the API says the rule is wrong. */
interface Fault {
  field: "id" | "sql" | "actions" | "general";
  text: string;
  /** 1-based line and column in the SQL. */
  line?: number;
  column?: number;
}

function faultOf(e: unknown): Fault {
  if (!(e instanceof Problem)) return { field: "general", text: errorText(e) };
  const first = e.errors[0] ?? {};
  switch (e.code) {
    case "rule_parse_error":
      return {
        field: "sql",
        text: e.message,
        line: Number(first.line) || undefined,
        column: Number(first.column) || undefined,
      };
    case "rule_unknown_zone":
      return { field: "sql", text: e.message };
    case "rule_invalid_action":
      return { field: "actions", text: t("rules.actionFault", { index: Number(first.action) + 1, reason: String(first.reason ?? e.message) }) };
    case "rule_invalid_id":
    case "already_exists":
      return { field: "id", text: e.message };
    default:
      if (e.status === 412) return { field: "general", text: t("rules.changedElsewhere") };
      if (e.status === 403) return { field: "general", text: refusal(e, "rules.needWrite") };
      return { field: "general", text: errorText(e) };
  }
}

/** The rule just created: its page, opened afresh after the save, says it was saved. */
let justCreated: string | null = null;

export function RuleEditor({ id }: { id: string | null }) {
  const writer = canWrite(currentAuth());
  const [stored, setStored] = useState<Rule | null>(null);
  const [ruleId, setRuleId] = useState("");
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [sql, setSql] = useState(id ? "" : TEMPLATE_SQL);
  const [actions, setActions] = useState(id ? "" : TEMPLATE_ACTIONS);
  const [enabled, setEnabled] = useState(true);
  const [fault, setFault] = useState<Fault | null>(null);
  const [saved, setSaved] = useState(() => id !== null && id === justCreated);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const sqlBox = useRef<HTMLTextAreaElement>(null);

  useEffect(() => {
    if (!id) return;
    api<Rule>(`/api/v1/rules/${encodeURIComponent(id)}`)
      .then((r) => {
        setStored(r);
        setRuleId(r.id);
        setName(r.name);
        setDescription(r.description);
        setSql(r.sql);
        setActions(JSON.stringify(r.actions, null, 2));
        setEnabled(r.enabled);
      })
      .catch((e) => setLoadError(errorText(e)));
  }, [id]);

  // A parse error puts the caret where the API says the rule is wrong.
  useEffect(() => {
    const box = sqlBox.current;
    if (!box || fault?.field !== "sql" || !fault.line) return;
    const lines = sql.split("\n");
    let at = 0;
    for (let i = 0; i < fault.line - 1 && i < lines.length; i++) at += lines[i].length + 1;
    at += Math.max(0, (fault.column ?? 1) - 1);
    box.focus();
    box.setSelectionRange(at, Math.min(sql.length, at + 1));
  }, [fault]);

  /** The actions box as JSON, or a fault under it. */
  const parsedActions = (): unknown[] | null => {
    try {
      const v = actions.trim() ? JSON.parse(actions) : [];
      if (!Array.isArray(v)) throw new Error(t("rules.actionsArray"));
      return v;
    } catch (e) {
      setFault({ field: "actions", text: t("rules.actionsJson", { detail: (e as Error).message }) });
      return null;
    }
  };

  const unchanged =
    !!stored &&
    stored.sql === sql &&
    JSON.stringify(stored.actions) === JSON.stringify((() => {
      try {
        return JSON.parse(actions);
      } catch {
        return null;
      }
    })());

  const save = async (e: Event) => {
    e.preventDefault();
    setFault(null);
    setSaved(false);
    const acts = parsedActions();
    if (!acts) return;
    setBusy(true);
    try {
      const body = { id: ruleId.trim(), name: name || undefined, description, sql, actions: acts, enabled };
      const r = stored
        ? await ruleCall<Rule>(`/api/v1/rules/${encodeURIComponent(stored.id)}`, "PUT", body, {
            "If-Match": `"${stored.version}"`,
          })
        : await ruleCall<Rule>("/api/v1/rules", "POST", body);
      setStored(r);
      setSaved(true);
      if (!id) {
        justCreated = r.id;
        navigate(`/console/rules/${encodeURIComponent(r.id)}`, true);
      }
    } catch (err) {
      setFault(faultOf(err));
    } finally {
      setBusy(false);
    }
  };

  if (loadError) return <p class="error">{t("common.error", { detail: loadError })}</p>;
  if (id && !stored) return <p class="muted">{t("common.loading")}</p>;

  const sqlLines = sql.split("\n");
  return (
    <section>
      <div class="toolbar">
        <Link href="/console/rules">← {t("rules.title")}</Link>
        <h1 data-testid="rule-title">{stored ? stored.id : t("rules.new")}</h1>
        {stored && (
          <span class="muted">
            {t("rules.version", { version: stored.version })} · {stored.enabled ? t("rules.on") : t("rules.off")}
          </span>
        )}
      </div>
      <div class="cards">
        <form class="card stack" onSubmit={save} data-testid="rule-form">
          <h2>{t("rules.definition")}</h2>
          <div class="row wrap">
            <label>
              {t("rules.id")}
              <input
                name="id"
                value={ruleId}
                required
                readOnly={!!stored}
                aria-invalid={fault?.field === "id"}
                onInput={(e) => setRuleId(e.currentTarget.value)}
              />
            </label>
            <label class="grow">
              {t("rules.name")}
              <input name="name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
            </label>
          </div>
          {fault?.field === "id" && (
            <p class="error" role="alert" data-testid="fault-id">
              {fault.text}
            </p>
          )}
          <label>
            {t("rules.description")}
            <input name="description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
          </label>
          <label>
            {t("rules.sql")}
            <textarea
              ref={sqlBox}
              name="sql"
              rows={Math.max(4, sqlLines.length + 1)}
              spellcheck={false}
              value={sql}
              aria-invalid={fault?.field === "sql"}
              data-testid="rule-sql"
              onInput={(e) => setSql(e.currentTarget.value)}
            />
          </label>
          {fault?.field === "sql" && (
            <div class="fault" role="alert" data-testid="fault-sql">
              {fault.line && fault.line <= sqlLines.length && (
                <pre class="json">
                  {`${fault.line} | ${sqlLines[fault.line - 1]}\n${" ".repeat(String(fault.line).length + 3 + Math.max(0, (fault.column ?? 1) - 1))}^`}
                </pre>
              )}
              <p class="error">{fault.text}</p>
            </div>
          )}
          <label>
            {t("rules.actionsJsonLabel")}
            <textarea
              name="actions"
              rows={Math.min(16, Math.max(4, actions.split("\n").length + 1))}
              spellcheck={false}
              value={actions}
              aria-invalid={fault?.field === "actions"}
              data-testid="rule-actions"
              onInput={(e) => setActions(e.currentTarget.value)}
            />
            <small class="muted">{t("rules.actionsHelp")}</small>
          </label>
          {fault?.field === "actions" && (
            <p class="error" role="alert" data-testid="fault-actions">
              {fault.text}
            </p>
          )}
          <label class="check">
            <input type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.currentTarget.checked)} />
            {t("rules.enabledOnSave")}
          </label>
          {fault?.field === "general" && (
            <p class="error" role="alert" data-testid="fault-general">
              {fault.text}
            </p>
          )}
          {saved && (
            <p class="ok" data-testid="rule-saved">
              {t("rules.saved")}
            </p>
          )}
          <div class="row">
            <button class="primary" type="submit" disabled={busy || !writer} data-testid="rule-save">
              {t("common.save")}
            </button>
            {!writer && <span class="muted">{t("rules.readOnly")}</span>}
          </div>
        </form>
        <DryRun
          stored={stored}
          unchanged={unchanged}
          rule={() => {
            const acts = parsedActions();
            return acts ? { sql, actions: acts } : null;
          }}
          onFault={(e) => setFault(faultOf(e))}
          clearFault={() => setFault(null)}
        />
      </div>
    </section>
  );
}

function DryRun(props: {
  stored: Rule | null;
  unchanged: boolean;
  rule: () => { sql: string; actions: unknown[] } | null;
  onFault: (e: unknown) => void;
  clearFault: () => void;
}) {
  const [device, setDevice] = useState("");
  const [topic, setTopic] = useState("");
  const [payload, setPayload] = useState('{"temp": 55}');
  const [results, setResults] = useState<DryRunResult[] | null>(null);
  const [replayed, setReplayed] = useState<ReplayResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  // Some device of the tenant to start from.
  useEffect(() => {
    api<{ devices: { id: string }[] }>("/api/v1/devices?limit=1")
      .then((p) => setDevice((d) => d || p.devices[0]?.id || ""))
      .catch(() => undefined);
  }, []);

  const run = async (f: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await f();
    } catch (e) {
      if (e instanceof Problem && e.code.startsWith("rule_")) props.onFault(e);
      else setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  const dryRun = (e: Event) => {
    e.preventDefault();
    let parsed: unknown;
    try {
      parsed = JSON.parse(payload);
    } catch (err) {
      setError(t("rules.payloadJson", { detail: (err as Error).message }));
      return;
    }
    // An array is several messages, evaluated in order (windows accumulate across them).
    const samples = (Array.isArray(parsed) ? parsed : [parsed]).map((p) => ({
      device_id: device.trim(),
      topic: topic.trim() || undefined,
      payload: p,
    }));
    const rule = props.unchanged ? null : props.rule();
    if (!props.unchanged && !rule) return;
    void run(async () => {
      props.clearFault();
      // The saved rule as it runs, or what the editor holds now.
      const r =
        props.stored && props.unchanged
          ? await ruleCall<DryRunResult[]>(`/api/v1/rules/${encodeURIComponent(props.stored.id)}/dry-run`, "POST", {
              samples,
            })
          : await ruleCall<DryRunResult[]>("/api/v1/rules/dry-run", "POST", { ...rule, samples });
      setResults(r);
      setReplayed(null);
    });
  };

  const useLatest = () =>
    run(async () => {
      const latest = await api<{ values: Record<string, { value: unknown }> }>(
        `/api/v1/devices/${encodeURIComponent(device.trim())}/telemetry/latest`,
      );
      const values = Object.fromEntries(Object.entries(latest.values).map(([k, v]) => [k, v.value]));
      setPayload(JSON.stringify(values, null, 2));
    });

  const replay = () =>
    run(async () => {
      const to = Date.now();
      const r = await ruleCall<ReplayResult>(
        `/api/v1/rules/${encodeURIComponent(props.stored!.id)}/replay`,
        "POST",
        { device_id: device.trim(), from: to - 3_600_000, to },
      );
      setReplayed(r);
      setResults(r.results);
    });

  return (
    <form class="card stack" onSubmit={dryRun} data-testid="dry-run">
      <h2>{t("rules.dryRun")}</h2>
      <p class="muted small">{t("rules.dryRunHelp")}</p>
      <div class="row wrap">
        <label>
          {t("rules.sampleDevice")}
          <input name="device" value={device} required onInput={(e) => setDevice(e.currentTarget.value)} />
        </label>
        <label class="grow">
          {t("rules.sampleTopic")}
          <input
            name="topic"
            value={topic}
            placeholder={`devices/${device || "{device_id}"}/telemetry`}
            onInput={(e) => setTopic(e.currentTarget.value)}
          />
        </label>
      </div>
      <label>
        {t("rules.samplePayload")}
        <textarea
          name="payload"
          rows={6}
          spellcheck={false}
          value={payload}
          data-testid="dry-run-payload"
          onInput={(e) => setPayload(e.currentTarget.value)}
        />
      </label>
      <div class="row wrap">
        <button class="primary" type="submit" disabled={busy} data-testid="dry-run-submit">
          {t("rules.dryRunSubmit")}
        </button>
        <button type="button" disabled={busy || !device.trim()} onClick={useLatest}>
          {t("rules.useLatest")}
        </button>
        {props.stored && (
          <button type="button" disabled={busy || !device.trim()} onClick={replay} title={t("rules.replayHelp")}>
            {t("rules.replay")}
          </button>
        )}
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {replayed && (
        <p data-testid="replay-summary">
          {t("rules.replaySummary", {
            messages: replayed.messages,
            matched: replayed.matched,
            actions: replayed.actions,
            errors: replayed.errors,
          })}
        </p>
      )}
      {results && <DryRunResults results={results} />}
    </form>
  );
}

function DryRunResults({ results }: { results: DryRunResult[] }) {
  if (results.length === 0) return <p class="muted">{t("rules.noResults")}</p>;
  return (
    <ol class="results" data-testid="dry-run-results">
      {results.map((r) => (
        <li key={r.index} data-matched={String(r.matched)}>
          <div class="row">
            <span class={`badge ${r.matched ? "badge-succeeded" : ""}`} data-testid="dry-run-verdict">
              {r.matched ? t("rules.matchedYes") : t("rules.matchedNo")}
            </span>
            <span class="muted small">{t("rules.sampleN", { n: r.index + 1 })}</span>
            {r.reason && <span class={r.reason.startsWith("evaluation failed") ? "error" : "muted"}>{r.reason}</span>}
          </div>
          {r.output && (
            <>
              <h3>{t("rules.output")}</h3>
              <pre class="json">{JSON.stringify(r.output, null, 2)}</pre>
            </>
          )}
          <h3>{t("rules.wouldFire", { count: r.actions.length })}</h3>
          {r.actions.length > 0 && (
            <ul class="fired" data-testid="dry-run-actions">
              {r.actions.map((a) => {
                const { action, ...rest } = a;
                return (
                  <li>
                    <span class="chip">{t(`rules.action.${action}` as MsgKey) || action}</span>
                    <code class="mono">{JSON.stringify(rest)}</code>
                  </li>
                );
              })}
            </ul>
          )}
          {r.action_errors?.map((e) => (
            <p class="error">{e}</p>
          ))}
        </li>
      ))}
    </ol>
  );
}
