// The rider's token (from sign-up), kept on the device in localStorage.
import { ApiError, request, type RequestOptions } from "../common/api";

export interface RiderSession {
  token: string;
  tenant: string;
  riderId: string;
}

const STORE = "wulian.rider";

export function riderSession(): RiderSession | null {
  try {
    const s = JSON.parse(localStorage.getItem(STORE) ?? "null") as RiderSession | null;
    return s?.token ? s : null;
  } catch {
    return null;
  }
}

export function saveRiderSession(s: RiderSession): void {
  localStorage.setItem(STORE, JSON.stringify(s));
}

export function forgetRider(): void {
  localStorage.removeItem(STORE);
  dispatchEvent(new Event("wulian-rider-signed-out"));
}

/** The tenant (bike-share operator) this app signs riders up with: `?tenant=` or "default". */
export function tenantFromUrl(): string {
  return new URLSearchParams(location.search).get("tenant") || "default";
}

export async function riderApi<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const s = riderSession();
  const headers: Record<string, string> = { ...opts.headers };
  if (s) headers.Authorization = `Bearer ${s.token}`;
  try {
    return await request<T>(path, { ...opts, headers });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) forgetRider();
    throw e;
  }
}
