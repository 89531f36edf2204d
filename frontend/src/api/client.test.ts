import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ApiError, configureClient, fieldErrors, freshAccessToken, request, tokens } from "./client";
import type { Session } from "./types";

function session(n: number): Session {
  return {
    access_token: `access-${n}`,
    refresh_token: `refresh-${n}`,
    token_type: "bearer",
    expires_in: 900,
    user: { id: "u1", account_id: "a1", email: "ana@example.com", name: "Ana Núñez", role: "admin" },
    account: { id: "a1", name: "Café Olé" },
  };
}

function json(status: number, body: unknown): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

const unauthorized = () => json(401, { error: { code: "token_expired", message: "expired", details: null } });

type Call = { url: string; auth: string | null; body: string | null };

function installFetch(handler: (c: Call) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const headers = (init?.headers ?? {}) as Record<string, string>;
    const call: Call = { url: String(input), auth: headers.Authorization ?? null, body: (init?.body as string) ?? null };
    calls.push(call);
    return handler(call);
  });
  vi.stubGlobal("fetch", fn);
  return calls;
}

let authFailures = 0;
let sessions: Session[] = [];

beforeEach(() => {
  localStorage.clear();
  tokens.save(session(1));
  authFailures = 0;
  sessions = [];
  configureClient({ onAuthFailure: () => authFailures++, onSession: (s) => sessions.push(s) });
});

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("request", () => {
  it("sends the bearer token and parses JSON", async () => {
    const calls = installFetch(() => json(200, { items: [] }));
    await expect(request("/api/devices")).resolves.toEqual({ items: [] });
    expect(calls[0]?.auth).toBe("Bearer access-1");
  });

  it("refreshes once on 401, stores the rotated tokens and retries", async () => {
    const calls = installFetch((c) => {
      if (c.url === "/api/auth/refresh") return json(200, session(2));
      return c.auth === "Bearer access-2" ? json(200, { ok: true }) : unauthorized();
    });
    await expect(request("/api/chats")).resolves.toEqual({ ok: true });
    expect(calls.map((c) => c.url)).toEqual(["/api/chats", "/api/auth/refresh", "/api/chats"]);
    expect(JSON.parse(calls[1]?.body ?? "{}")).toEqual({ refresh_token: "refresh-1" });
    expect(tokens.access).toBe("access-2");
    expect(tokens.refresh).toBe("refresh-2"); // rotation: always keep the new one
    expect(sessions).toHaveLength(1);
    expect(authFailures).toBe(0);
  });

  it("serialises concurrent refreshes into one call", async () => {
    let refreshes = 0;
    const calls = installFetch(async (c) => {
      if (c.url === "/api/auth/refresh") {
        refreshes++;
        await new Promise((r) => setTimeout(r, 10));
        return json(200, session(2));
      }
      return c.auth === "Bearer access-2" ? json(200, { url: c.url }) : unauthorized();
    });
    const results = await Promise.all([request("/api/a"), request("/api/b"), request("/api/c")]);
    expect(results).toEqual([{ url: "/api/a" }, { url: "/api/b" }, { url: "/api/c" }]);
    expect(refreshes).toBe(1);
    expect(calls.filter((c) => c.url !== "/api/auth/refresh" && c.auth === "Bearer access-2")).toHaveLength(3);
  });

  it("does not refresh again for a request that used a token already replaced", async () => {
    let refreshes = 0;
    installFetch((c) => {
      if (c.url === "/api/auth/refresh") {
        refreshes++;
        return json(200, session(2));
      }
      return c.auth === "Bearer access-2" ? json(200, {}) : unauthorized();
    });
    await request("/api/one");
    // a second request goes out with the stale token (e.g. built before the refresh)
    localStorage.setItem("clarin.access_token", "access-2");
    await request("/api/two");
    expect(refreshes).toBe(1);
  });

  it("on a failed refresh clears the session and reports an auth failure", async () => {
    installFetch((c) =>
      c.url === "/api/auth/refresh"
        ? json(401, { error: { code: "invalid_token", message: "revoked", details: null } })
        : unauthorized(),
    );
    const err = await request("/api/chats").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(401);
    expect(tokens.access).toBeNull();
    expect(tokens.refresh).toBeNull();
    expect(authFailures).toBe(1);
  });

  it("keeps the session when the refresh endpoint is down (503)", async () => {
    installFetch((c) =>
      c.url === "/api/auth/refresh"
        ? json(503, { error: { code: "unavailable", message: "down", details: null } })
        : unauthorized(),
    );
    const err = await request("/api/chats").catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(503);
    expect(tokens.refresh).toBe("refresh-1");
    expect(authFailures).toBe(0);
  });

  it("logs out if the retried request is still 401", async () => {
    installFetch((c) => (c.url === "/api/auth/refresh" ? json(200, session(2)) : unauthorized()));
    await expect(request("/api/chats")).rejects.toBeInstanceOf(ApiError);
    expect(authFailures).toBe(1);
    expect(tokens.refresh).toBeNull();
  });

  it("never refreshes for unauthenticated calls (wrong password)", async () => {
    const calls = installFetch(() => json(401, { error: { code: "invalid_credentials", message: "Email or password is wrong", details: null } }));
    const err = (await request("/api/auth/login", { method: "POST", json: {}, auth: false }).catch((e: unknown) => e)) as ApiError;
    expect(err.code).toBe("invalid_credentials");
    expect(calls).toHaveLength(1);
    expect(calls[0]?.auth).toBeNull();
    expect(authFailures).toBe(0);
  });

  it("returns undefined for 204 and maps network failures", async () => {
    installFetch(() => json(204, null));
    await expect(request("/api/chats/1/read", { method: "POST" })).resolves.toBeUndefined();
    vi.stubGlobal("fetch", vi.fn(async () => Promise.reject(new TypeError("Failed to fetch"))));
    const err = (await request("/api/chats").catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(0);
    expect(err.code).toBe("network");
  });

  it("reads Retry-After on 429", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => new Response(JSON.stringify({ error: { code: "rate_limited", message: "slow down", details: null } }), { status: 429, headers: { "Retry-After": "7" } })),
    );
    const err = (await request("/api/chats").catch((e: unknown) => e)) as ApiError;
    expect(err.retryAfter).toBe(7);
  });
});

describe("freshAccessToken", () => {
  const jwt = (expSec: number) => `h.${btoa(JSON.stringify({ exp: expSec })).replace(/=+$/, "")}.s`;

  it("keeps a token that is still valid", async () => {
    localStorage.setItem("clarin.access_token", jwt(Date.now() / 1000 + 600));
    const fetchSpy = vi.fn();
    vi.stubGlobal("fetch", fetchSpy);
    await freshAccessToken();
    expect(fetchSpy).not.toHaveBeenCalled();
  });

  it("refreshes a token about to expire", async () => {
    localStorage.setItem("clarin.access_token", jwt(Date.now() / 1000 + 5));
    installFetch(() => json(200, session(3)));
    await expect(freshAccessToken()).resolves.toBe("access-3");
  });
});

describe("fieldErrors", () => {
  it("maps 422 details to fields", () => {
    const err = new ApiError(422, "validation_error", "invalid", [
      { loc: ["body", "email"], msg: "value is not a valid email address", type: "value_error" },
      { loc: ["body", "password"], msg: "String should have at least 8 characters", type: "string_too_short" },
      { loc: ["body"], msg: "bad body", type: "x" },
    ]);
    expect(fieldErrors(err)).toEqual({
      email: "value is not a valid email address",
      password: "String should have at least 8 characters",
      _: "bad body",
    });
    expect(fieldErrors(new Error("x"))).toEqual({});
  });
});
