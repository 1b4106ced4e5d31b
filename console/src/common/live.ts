// Live device events over one WebSocket to /api/v1/live for the whole page: components watch
// devices (telemetry, status, twin, commands) or every device's status; the socket carries the
// union of what they watch. It reconnects with backoff, and tells a watcher to reload what it
// shows whenever it may have missed events (before its subscription was confirmed, after a
// reconnect, after the server said the socket lagged).

export interface TelemetryEvent {
  type: "telemetry";
  device: string;
  ts: number;
  values: Record<string, unknown>;
}
export interface StatusEvent {
  type: "status";
  device: string;
  change: "connected" | "disconnected" | "inactive" | "active";
  online: boolean;
  inactive: boolean;
  last_seen_at: number | null;
  at: number;
}
export interface TwinEvent {
  type: "twin";
  device: string;
  section: "desired" | "reported";
  version: number;
  desired: unknown;
  reported: unknown;
  delta: unknown;
}
export interface LiveCommand {
  id: string;
  device_id: string;
  name: string;
  params: unknown;
  status: string;
  response: unknown;
  timeout_ms: number;
  created_at: number;
  updated_at: number;
}
export interface CommandEvent {
  type: "command";
  device: string;
  command: LiveCommand;
}
export type LiveEvent = TelemetryEvent | StatusEvent | TwinEvent | CommandEvent;

/** `live`: subscribed and streaming; `connecting`; `offline`: closed (retrying unless ended). */
export type LiveState = "connecting" | "live" | "offline";

export interface LiveWatch {
  /** Devices whose telemetry, status, twin and commands to receive. */
  devices?: string[];
  /** Status changes of every device of the tenant. */
  allStatus?: boolean;
  onEvent(e: LiveEvent): void;
  /** Events may have been missed: reload what is shown. */
  onResync?(): void;
  onState?(s: LiveState): void;
}

/** The API key to offer (browsers cannot set Authorization on a WebSocket); null: the cookie. */
type KeySource = () => string | null;

const MAX_BACKOFF_MS = 30_000;
/** Keep the socket this long after the last watcher leaves (page changes reuse it). */
const LINGER_MS = 5_000;
/** Close code of a credential that stopped working: reconnecting would not help. */
const POLICY_VIOLATION = 1008;

class LiveClient {
  private watchers = new Set<LiveWatch>();
  /** Watchers whose subscription the server has confirmed since the socket opened. */
  private covered = new Set<LiveWatch>();
  private ws: WebSocket | null = null;
  private state: LiveState = "offline";
  private backoff = 1000;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private linger: ReturnType<typeof setTimeout> | undefined;
  private pending = false;
  private ended = false;

  constructor(private key: KeySource) {}

  watch(w: LiveWatch): () => void {
    this.watchers.add(w);
    clearTimeout(this.linger);
    this.ended = false;
    w.onState?.(this.state);
    if (this.ws) this.resubscribe();
    else this.connect();
    return () => {
      this.watchers.delete(w);
      this.covered.delete(w);
      if (this.watchers.size === 0) {
        this.linger = setTimeout(() => this.close(), LINGER_MS);
      } else {
        this.resubscribe();
      }
    };
  }

  private wanted(): { devices: string[]; status: "all" | "devices" } {
    const devices = new Set<string>();
    let all = false;
    for (const w of this.watchers) {
      w.devices?.forEach((d) => devices.add(d));
      all ||= !!w.allStatus;
    }
    return { devices: [...devices].sort(), status: all ? "all" : "devices" };
  }

  private setState(s: LiveState) {
    this.state = s;
    this.watchers.forEach((w) => w.onState?.(s));
  }

  private connect() {
    clearTimeout(this.retry);
    if (this.watchers.size === 0 || this.ended) return;
    const { devices, status } = this.wanted();
    const q = new URLSearchParams({ status });
    if (devices.length) q.set("devices", devices.join(","));
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/live?${q}`;
    const key = this.key();
    let ws: WebSocket;
    try {
      ws = key ? new WebSocket(url, ["wulian.live", `wulian.bearer.${key}`]) : new WebSocket(url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.covered.clear();
    this.setState("connecting");
    ws.onmessage = (m) => this.onMessage(ws, m);
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.covered.clear();
      this.setState("offline");
      if (e.code === POLICY_VIOLATION) this.ended = true;
      else this.scheduleRetry();
    };
  }

  private scheduleRetry() {
    if (this.watchers.size === 0 || this.ended) return;
    this.retry = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }

  private close() {
    clearTimeout(this.retry);
    const ws = this.ws;
    this.ws = null;
    this.covered.clear();
    ws?.close();
    this.state = "offline";
  }

  /** Sends the union of the watchers' wishes, once per burst of changes. */
  private resubscribe() {
    if (this.pending) return;
    this.pending = true;
    queueMicrotask(() => {
      this.pending = false;
      const ws = this.ws;
      if (ws?.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: "subscribe", ...this.wanted() }));
      }
      // Not open yet: the URL of the next open carries the subscription (see `onMessage`).
    });
  }

  private onMessage(ws: WebSocket, m: MessageEvent) {
    if (this.ws !== ws) return;
    let e: { type?: string; device?: string; devices?: string[]; status?: string; dropped?: number };
    try {
      e = JSON.parse(String(m.data));
    } catch {
      return;
    }
    switch (e.type) {
      case "subscribed": {
        this.backoff = 1000;
        if (this.state !== "live") this.setState("live");
        const devices = new Set(e.devices ?? []);
        for (const w of this.watchers) {
          if (this.covered.has(w)) continue;
          const has = (w.devices ?? []).every((d) => devices.has(d)) && (!w.allStatus || e.status === "all");
          if (has) {
            this.covered.add(w);
            w.onResync?.();
          }
        }
        // A watcher that came while the socket was opening is not in the URL's subscription.
        if ([...this.watchers].some((w) => !this.covered.has(w))) this.resubscribe();
        return;
      }
      case "lagged":
        this.watchers.forEach((w) => w.onResync?.());
        return;
      case "error":
        console.warn("live:", e);
        return;
    }
    const ev = e as LiveEvent;
    for (const w of this.watchers) {
      if (!this.covered.has(w)) continue;
      if (w.devices?.includes(ev.device) || (w.allStatus && ev.type === "status")) w.onEvent(ev);
    }
  }
}

let client: LiveClient | null = null;

/** Watches live events; returns the function that stops watching. */
export function watchLive(w: LiveWatch, key: KeySource): () => void {
  client ??= new LiveClient(key);
  return client.watch(w);
}
