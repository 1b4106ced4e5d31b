// Starts the real binary once per worker: `wulian demo` with its simulated city on port 0,
// reading the HTTP address and the admin key from its stdout.
import { test as base, expect } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export interface Server {
  base: string;
  key: string;
  /** GET an API path with the admin key. */
  api<T>(path: string): Promise<T>;
}

const BIN = process.env.WULIAN_BIN || resolve(import.meta.dirname, "../../target/debug/wulian");
export const IMAGES = resolve(import.meta.dirname, "../../docs/images");

async function start(bikes: number): Promise<{ server: Server; child: ChildProcess; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "wulian-e2e-"));
  const child = spawn(
    BIN,
    [
      "demo",
      "--bikes",
      String(bikes),
      "--time-scale",
      "60",
      "--data-dir",
      dir,
      "--http-addr",
      "127.0.0.1:0",
      "--mqtt-addr",
      "127.0.0.1:0",
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  let out = "";
  let err = "";
  child.stderr!.on("data", (d) => (err = (err + d).slice(-4000)));
  const ready = new Promise<{ base: string; key: string }>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`wulian did not start in 60 s:\n${out}\n${err}`)), 60_000);
    child.on("exit", (code) => fail(new Error(`wulian exited (${code}):\n${out}\n${err}`)));
    child.stdout!.on("data", (d) => {
      out += d;
      const http = /HTTP API listening on (http:\/\/\S+)/.exec(out);
      const key = /admin API key: (wlk_\S+)/.exec(out);
      if (http && key && /rider app: /.test(out)) {
        clearTimeout(timer);
        ok({ base: http[1], key: key[1] });
      }
    });
  });
  const { base: url, key } = await ready;
  const server: Server = {
    base: url,
    key,
    async api<T>(path: string) {
      const r = await fetch(url + path, { headers: { Authorization: `Bearer ${key}` } });
      if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
      return (await r.json()) as T;
    },
  };
  // Wait until the simulated locks have reported and some bikes are available.
  await expect
    .poll(
      async () =>
        (await server.api<{ by_status: Record<string, number> }>("/api/v1/bikeshare/fleet/summary")).by_status
          .available ?? 0,
      { timeout: 60_000 },
    )
    .toBeGreaterThan(0);
  return { server, child, dir };
}

export const test = base.extend<object, { server: Server }>({
  server: [
    async ({}, use) => {
      const { server, child, dir } = await start(200);
      await use(server);
      child.kill("SIGTERM");
      await new Promise((r) => {
        const t = setTimeout(() => {
          child.kill("SIGKILL");
          r(null);
        }, 15_000);
        child.on("exit", () => {
          clearTimeout(t);
          r(null);
        });
      });
      rmSync(dir, { recursive: true, force: true });
    },
    { scope: "worker", timeout: 120_000 },
  ],
});

export { expect };

/** A valid 18-character resident identity number (check character computed). */
export function residentId(seed: number): string {
  const body = `110105${1985 + (seed % 20)}0${1 + (seed % 9)}1${seed % 10}${String(100 + (seed % 900)).padStart(3, "0")}`;
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body].reduce((s, c, i) => s + Number(c) * weights[i], 0);
  return body + "10X98765432"[sum % 11];
}
