// HTTP client for the Clarin gateway: bearer tokens kept in localStorage,
// silent refresh on 401 (once per request), rotation-safe and serialised.
import type { Account, ErrorBody, Session, User } from "./types";

const ACCESS_KEY = "clarin.access_token";
const REFRESH_KEY = "clarin.refresh_token";
const PROFILE_KEY = "clarin.profile";

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  readonly retryAfter: number | null;

  constructor(status: number, code: string, message: string, details: unknown = null, retryAfter: number | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

function store(): Storage | null {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch {
    return null;
  }
}

export interface Profile {
  user: User;
  account: Account;
}

export const tokens = {
  get access(): string | null {
    return store()?.getItem(ACCESS_KEY) ?? null;
  },
  get refresh(): string | null {
    return store()?.getItem(REFRESH_KEY) ?? null;
  },
  get profile(): Profile | null {
    const raw = store()?.getItem(PROFILE_KEY);
    if (!raw) return null;
    try {
      return JSON.parse(raw) as Profile;
    } catch {
      return null;
    }
  },
  save(session: Session): void {
    const s = store();
    if (!s) return;
    s.setItem(ACCESS_KEY, session.access_token);
    s.setItem(REFRESH_KEY, session.refresh_token);
    s.setItem(PROFILE_KEY, JSON.stringify({ user: session.user, account: session.account }));
  },
  saveProfile(profile: Profile): void {
    store()?.setItem(PROFILE_KEY, JSON.stringify(profile));
  },
  clear(): void {
    const s = store();
    if (!s) return;
    s.removeItem(ACCESS_KEY);
    s.removeItem(REFRESH_KEY);
    s.removeItem(PROFILE_KEY);
  },
};

type Handlers = {
  onAuthFailure: () => void;
  onSession: (session: Session) => void;
};

let handlers: Handlers = { onAuthFailure: () => {}, onSession: () => {} };

/** Wire the client to the app (auth store): called once at start-up. */
export function configureClient(h: Partial<Handlers>): void {
  handlers = { ...handlers, ...h };
}

async function toApiError(res: Response): Promise<ApiError> {
  let body: ErrorBody | null = null;
  try {
    body = (await res.json()) as ErrorBody;
  } catch {
    body = null;
  }
  const ra = res.headers.get("Retry-After");
  const retryAfter = ra && !Number.isNaN(Number(ra)) ? Number(ra) : null;
  const err = body && typeof body === "object" && body.error ? body.error : null;
  return new ApiError(
    res.status,
    err?.code ?? `http_${res.status}`,
    err?.message ?? res.statusText ?? `HTTP ${res.status}`,
    err?.details ?? null,
    retryAfter,
  );
}

function authFailed(): void {
  tokens.clear();
  handlers.onAuthFailure();
}

let inflight: Promise<string> | null = null;

async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  // Serialise refreshes across tabs too: refresh tokens are single-use, so two
  // tabs rotating the same one would trip reuse detection and revoke the family.
  const locks = typeof navigator !== "undefined" ? (navigator as Navigator).locks : undefined;
  if (locks && typeof locks.request === "function") {
    return locks.request("clarin-token-refresh", fn) as Promise<T>;
  }
  return fn();
}

async function doRefresh(stale: string | null | undefined): Promise<string> {
  return withLock(async () => {
    // Someone (another request, another tab) already rotated while we waited.
    const current = tokens.access;
    if (stale !== undefined && current && current !== stale) return current;
    const refreshToken = tokens.refresh;
    if (!refreshToken) {
      authFailed();
      throw new ApiError(401, "no_session", "Not signed in");
    }
    let res: Response;
    try {
      res = await fetch("/api/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ refresh_token: refreshToken }),
      });
    } catch {
      throw new ApiError(0, "network", "Network error");
    }
    if (res.ok) {
      const session = (await res.json()) as Session;
      tokens.save(session); // always keep the rotated refresh token
      handlers.onSession(session);
      return session.access_token;
    }
    const err = await toApiError(res);
    // 5xx / 429: the session may still be good, keep it and let the caller fail.
    if (res.status >= 500 || res.status === 429) throw err;
    authFailed();
    throw err;
  });
}

/**
 * Get a new access token. `stale` is the token that was rejected: if the stored
 * one already differs, it is returned without another refresh. Concurrent
 * callers share one request.
 */
export function refreshSession(stale?: string | null): Promise<string> {
  const current = tokens.access;
  if (stale !== undefined && current && current !== stale) return Promise.resolve(current);
  if (!inflight) {
    inflight = doRefresh(stale).finally(() => {
      inflight = null;
    });
  }
  return inflight;
}

export function jwtExpiry(token: string): number | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4))) as { exp?: unknown };
    return typeof json.exp === "number" ? json.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** An access token valid for at least `skewMs` more (refreshing if needed). */
export async function freshAccessToken(skewMs = 30_000): Promise<string> {
  const t = tokens.access;
  if (t) {
    const exp = jwtExpiry(t);
    if (exp === null || exp - Date.now() > skewMs) return t;
  }
  return refreshSession(t);
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export interface RequestOptions {
  method?: string;
  json?: unknown;
  form?: FormData;
  query?: Query;
  auth?: boolean;
  signal?: AbortSignal;
  as?: "json" | "blob";
}

export function buildUrl(path: string, query?: Query): string {
  if (!query) return path;
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === "") continue;
    qs.set(k, String(v));
  }
  const s = qs.toString();
  return s ? `${path}?${s}` : path;
}

export async function request<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const { method = "GET", json, form, query, auth = true, signal, as = "json" } = opts;
  const url = buildUrl(path, query);
  const send = async (token: string | null): Promise<Response> => {
    const headers: Record<string, string> = { Accept: as === "json" ? "application/json" : "*/*" };
    let body: BodyInit | undefined;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form; // the browser sets the multipart boundary
    }
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      return await fetch(url, { method, headers, body, signal });
    } catch (e) {
      if (e instanceof DOMException && e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "Network error");
    }
  };

  const token = auth ? tokens.access : null;
  let res = await send(token);
  if (res.status === 401 && auth) {
    const fresh = await refreshSession(token);
    res = await send(fresh);
    if (res.status === 401) {
      const err = await toApiError(res);
      authFailed();
      throw err;
    }
  }
  if (!res.ok) throw await toApiError(res);
  if (as === "blob") return (await res.blob()) as T;
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** Field → message map from a 422 `details` list (`loc` like ["body", "email"]). */
export function fieldErrors(err: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!(err instanceof ApiError) || !Array.isArray(err.details)) return out;
  for (const d of err.details as unknown[]) {
    if (!d || typeof d !== "object") continue;
    const { loc, msg } = d as { loc?: unknown; msg?: unknown };
    const path = Array.isArray(loc) ? loc.filter((p): p is string => typeof p === "string" && p !== "body") : [];
    const field = path[0] ?? "_";
    if (typeof msg === "string" && !out[field]) out[field] = msg;
  }
  return out;
}
