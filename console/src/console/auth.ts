// The operator's credential: a session (HttpOnly cookie `wulian_session` plus the CSRF token
// the server returned) or an API key typed on the login screen (kept in sessionStorage).
import { ApiError, request, type RequestOptions } from "../common/api";

export type Auth =
  | { kind: "session"; user: string; tenant: string; role: string; csrf: string }
  | { kind: "key"; key: string };

interface SessionView {
  username?: string;
  user?: string | { username?: string; id?: string };
  tenant: string;
  role: string;
  csrf_token: string;
}

const KEY_STORE = "wulian.apiKey";
let auth: Auth | null = null;
const onLogout = new Set<() => void>();

export function currentAuth(): Auth | null {
  return auth;
}

export function subscribeLogout(f: () => void): () => void {
  onLogout.add(f);
  return () => onLogout.delete(f);
}

function fromSession(s: SessionView): Auth {
  const user = s.username ?? (typeof s.user === "string" ? s.user : (s.user?.username ?? s.user?.id ?? "?"));
  return { kind: "session", user, tenant: s.tenant, role: s.role, csrf: s.csrf_token };
}

/** The credential this tab already has, if it still works. */
export async function restore(): Promise<Auth | null> {
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) {
    try {
      return await signInWithKey(key);
    } catch {
      sessionStorage.removeItem(KEY_STORE);
    }
  }
  try {
    auth = fromSession(await request<SessionView>("/api/v1/session"));
    return auth;
  } catch {
    return null;
  }
}

export async function signInWithKey(key: string): Promise<Auth> {
  // Any read the key may do proves it.
  await request("/api/v1/devices?limit=1", { headers: { Authorization: `Bearer ${key}` } });
  sessionStorage.setItem(KEY_STORE, key);
  auth = { kind: "key", key };
  return auth;
}

export async function signIn(tenant: string, username: string, password: string): Promise<Auth> {
  const s = await request<SessionView>("/api/v1/session", {
    method: "POST",
    body: { tenant, username, password },
  });
  auth = fromSession(s);
  return auth;
}

export async function signOut(): Promise<void> {
  const was = auth;
  auth = null;
  sessionStorage.removeItem(KEY_STORE);
  if (was?.kind === "session") {
    await request("/api/v1/session", {
      method: "DELETE",
      headers: { "X-CSRF-Token": was.csrf },
    }).catch(() => undefined);
  }
  onLogout.forEach((f) => f());
}

/** A request with the operator's credential; a 401 signs the operator out. */
export async function api<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { ...opts.headers };
  if (auth?.kind === "key") headers.Authorization = `Bearer ${auth.key}`;
  else if (auth?.kind === "session" && (opts.method ?? "GET") !== "GET") {
    headers["X-CSRF-Token"] = auth.csrf;
  }
  try {
    return await request<T>(path, { ...opts, headers });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && auth) {
      auth = null;
      sessionStorage.removeItem(KEY_STORE);
      onLogout.forEach((f) => f());
    }
    throw e;
  }
}
