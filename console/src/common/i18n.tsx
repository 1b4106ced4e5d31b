// Message catalogs (English, Simplified Chinese), the language choice and locale-aware formats.
import { useEffect, useState } from "preact/hooks";
import { en } from "./messages/en";
import { zhCN } from "./messages/zh-CN";

export type Lang = "en" | "zh-CN";
export type MsgKey = keyof typeof en;

const CATALOGS: Record<Lang, Record<MsgKey, string>> = { en, "zh-CN": zhCN };
export const LANGS: { id: Lang; label: string }[] = [
  { id: "en", label: "English" },
  { id: "zh-CN", label: "简体中文" },
];
const STORE = "wulian.lang";

function detect(): Lang {
  const stored = localStorage.getItem(STORE);
  if (stored === "en" || stored === "zh-CN") return stored;
  return navigator.language.toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

let current: Lang = detect();
document.documentElement.lang = current;
const listeners = new Set<() => void>();

export function lang(): Lang {
  return current;
}

export function setLang(next: Lang): void {
  current = next;
  localStorage.setItem(STORE, next);
  document.documentElement.lang = next;
  listeners.forEach((f) => f());
}

/** The message `key` in the current language, with `{name}` placeholders filled. */
export function t(key: MsgKey, params?: Record<string, string | number>): string {
  const text = CATALOGS[current][key] ?? en[key];
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (m, name: string) =>
    name in params ? String(params[name]) : m,
  );
}

/** Re-renders the calling component when the language changes. */
export function useLang(): Lang {
  const [, bump] = useState(0);
  useEffect(() => {
    const f = () => bump((n) => n + 1);
    listeners.add(f);
    return () => {
      listeners.delete(f);
    };
  }, []);
  return current;
}

export function LangSwitch() {
  return (
    <select
      class="lang"
      aria-label={t("common.language")}
      value={current}
      onChange={(e) => setLang((e.target as HTMLSelectElement).value as Lang)}
    >
      {LANGS.map((l) => (
        <option value={l.id}>{l.label}</option>
      ))}
    </select>
  );
}

export function fmtTime(ms: number | null | undefined): string {
  if (ms == null) return "—";
  return new Date(ms).toLocaleString(current, { hour12: false });
}

export function fmtNumber(n: number, digits = 2): string {
  return n.toLocaleString(current, { maximumFractionDigits: digits });
}

/** Minor units (fen) as money. */
export function fmtMoney(minor: number, currency = "CNY"): string {
  return (minor / 100).toLocaleString(current, { style: "currency", currency });
}

export function fmtDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(sec)}` : `${pad(m)}:${pad(sec)}`;
}

/** A bucket width in ms as "1 min", "15 s", "2 h" or "1 d". */
export function fmtInterval(ms: number): string {
  const units: [number, string][] = [
    [86_400_000, current === "zh-CN" ? " 天" : " d"],
    [3_600_000, current === "zh-CN" ? " 小时" : " h"],
    [60_000, current === "zh-CN" ? " 分钟" : " min"],
    [1000, current === "zh-CN" ? " 秒" : " s"],
  ];
  for (const [size, unit] of units) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms} ms`;
}
