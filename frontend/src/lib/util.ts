import { ApiError } from "../api/client";
import { locale, type Lang, type TFn } from "../i18n";

/** crypto.randomUUID needs a secure context; fall back to getRandomValues on plain http. */
export function uuid(): string {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") {
    try {
      return c.randomUUID();
    } catch {
      /* insecure context */
    }
  }
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A user-facing message for any error thrown by the API client. */
export function errorText(t: TFn, err: unknown): string {
  if (err instanceof ApiError) {
    if (err.status === 0) return t("common.networkError");
    if (err.code === "invalid_credentials") return t("auth.invalidCredentials");
    if (err.code === "user_disabled") return t("auth.userDisabled");
    if (err.code === "last_admin") return t("users.lastAdmin");
    if (err.code === "cannot_remove_self") return t("users.cannotRemoveSelf");
    if (err.status === 429) return t("common.rateLimited", { s: err.retryAfter ?? 5 });
    if (err.status === 503) return t("common.unavailable");
    if (err.status === 403) return t("common.forbidden");
    if (err.status === 404) return t("common.notFound");
    if (err.code === "device_not_connected") return t("devices.notConnected");
    return err.message || t("common.error");
  }
  return t("common.error");
}

/** Avatar initials: first letters of the first and last words (accent- and emoji-safe). */
export function initials(name: string | null | undefined): string {
  const all = (name ?? "").trim().split(/\s+/).filter(Boolean);
  if (all.length === 0) return "?";
  const lettered = all.filter((w) => /^\p{L}/u.test(w));
  const words = lettered.length ? lettered : all;
  const first = (w: string): string => {
    if (typeof Intl !== "undefined" && "Segmenter" in Intl) {
      const seg = new Intl.Segmenter(undefined, { granularity: "grapheme" });
      for (const s of seg.segment(w)) return s.segment;
    }
    return Array.from(w)[0] ?? "";
  };
  const a = first(words[0] ?? "");
  const b = words.length > 1 ? first(words[words.length - 1] ?? "") : "";
  return (a + b).toLocaleUpperCase();
}

export function isSameDay(a: Date, b: Date): boolean {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** Short time for lists: HH:MM today, "Yesterday", or a date. */
export function shortTime(iso: string | null | undefined, lang: Lang, t: TFn): string {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const now = new Date();
  if (isSameDay(d, now)) return d.toLocaleTimeString(locale(lang), { hour: "2-digit", minute: "2-digit" });
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (isSameDay(d, y)) return t("inbox.yesterday");
  return d.toLocaleDateString(locale(lang), { day: "2-digit", month: "2-digit", year: "2-digit" });
}

export function clockTime(iso: string, lang: Lang): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString(locale(lang), { hour: "2-digit", minute: "2-digit" });
}

export function dayLabel(iso: string, lang: Lang, t: TFn): string {
  const d = new Date(iso);
  const now = new Date();
  if (isSameDay(d, now)) return t("inbox.today");
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (isSameDay(d, y)) return t("inbox.yesterday");
  return d.toLocaleDateString(locale(lang), { weekday: "long", day: "numeric", month: "long", year: "numeric" });
}

export function dateTime(iso: string | null | undefined, lang: Lang): string {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime())
    ? ""
    : d.toLocaleString(locale(lang), { dateStyle: "medium", timeStyle: "short" });
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function formatMoney(v: number | string | null | undefined, lang: Lang): string {
  if (v === null || v === undefined || v === "") return "";
  const n = typeof v === "number" ? v : Number(v);
  if (Number.isNaN(n)) return String(v);
  return n.toLocaleString(locale(lang), { maximumFractionDigits: 2 });
}

export function cx(...parts: (string | false | null | undefined)[]): string {
  return parts.filter(Boolean).join(" ");
}
