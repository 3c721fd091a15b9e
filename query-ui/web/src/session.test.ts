import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, getJson, onUnauthorized } from "./api";
import {
  authEnabled,
  currentSession,
  signIn,
  signInBody,
  signInMessage,
  signOut,
  switchTenant,
  tenantChoice,
  type SessionInfo,
} from "./session";

interface Seen {
  url: string;
  init: RequestInit;
}

/** Replaces fetch with one answering `status` and `body`; returns the calls it saw. */
function stubFetch(status: number, body: unknown): Seen[] {
  const seen: Seen[] = [];
  vi.stubGlobal("fetch", async (url: string, init: RequestInit) => {
    seen.push({ url, init });
    const text = body === undefined ? "" : JSON.stringify(body);
    return new Response(status === 204 ? null : text, { status });
  });
  return seen;
}

const header = (s: Seen, name: string) => new Headers(s.init.headers).get(name);

const session: SessionInfo = {
  name: "team",
  tenant: "a",
  tenants: ["a", "b"],
  scopes: ["read"],
  expires: "2026-12-08T12:00:00Z",
};

afterEach(() => {
  vi.unstubAllGlobals();
  onUnauthorized(null);
});

describe("the fetch wrapper", () => {
  it("sends the cookie and the UI's header on every call", async () => {
    const seen = stubFetch(200, { hits: [] });
    await getJson("/api/v1/logs/search", { q: "x", service: "" });
    expect(seen[0].url).toBe("/api/v1/logs/search?q=x");
    expect(seen[0].init.credentials).toBe("same-origin");
    expect(header(seen[0], "X-Periscope-Request")).toBe("1");
    expect(header(seen[0], "Accept")).toBe("application/json");
  });

  it("reports a 401 to the sign-in handler, with the server's message", async () => {
    stubFetch(401, { status: "error", error: "invalid token" });
    const got: ApiError[] = [];
    onUnauthorized((e) => got.push(e));
    await expect(getJson("/api/v1/services")).rejects.toMatchObject({ status: 401, detail: "invalid token" });
    expect(got).toHaveLength(1);
  });

  it("leaves other failures to the page", async () => {
    stubFetch(403, { error: 'token "a" does not reach tenant "c"' });
    const got: ApiError[] = [];
    onUnauthorized((e) => got.push(e));
    await expect(getJson("/api/v1/services")).rejects.toMatchObject({ status: 403 });
    expect(got).toHaveLength(0);
  });
});

describe("session calls", () => {
  it("sign in posts the token, and the tenant only when typed", async () => {
    expect(signInBody(" pscp_x ", "  ")).toEqual({ token: "pscp_x" });
    expect(signInBody("pscp_x", " lab ")).toEqual({ token: "pscp_x", tenant: "lab" });
    const seen = stubFetch(200, session);
    expect(await signIn("pscp_x", "b")).toEqual(session);
    expect(seen[0].init.method).toBe("POST");
    expect(JSON.parse(String(seen[0].init.body))).toEqual({ token: "pscp_x", tenant: "b" });
    expect(header(seen[0], "Content-Type")).toBe("application/json");
    expect(header(seen[0], "X-Periscope-Request")).toBe("1");
  });

  it("a refused sign-in is the form's error, not a trip to the sign-in page", async () => {
    stubFetch(401, { error: "invalid token" });
    const got: ApiError[] = [];
    onUnauthorized((e) => got.push(e));
    const e = await signIn("pscp_wrong").catch((x: unknown) => x);
    expect(got).toHaveLength(0);
    expect(signInMessage(e)).toMatch(/Unknown token/);
    stubFetch(403, { error: 'token "ops" reaches every tenant: enter the tenant to sign in to' });
    expect(signInMessage(await signIn("pscp_ops").catch((x: unknown) => x))).toMatch(/enter the tenant/);
  });

  it("switch and sign out", async () => {
    let seen = stubFetch(200, { ...session, tenant: "b" });
    expect((await switchTenant(" b ")).tenant).toBe("b");
    expect(seen[0].init.method).toBe("PUT");
    expect(JSON.parse(String(seen[0].init.body))).toEqual({ tenant: "b" });
    seen = stubFetch(204, undefined);
    await signOut();
    expect(seen[0].init.method).toBe("DELETE");
    expect(header(seen[0], "X-Periscope-Request")).toBe("1");
  });

  it("no session and no sign-in read as such", async () => {
    stubFetch(401, { error: "not signed in" });
    expect(await currentSession()).toBeNull();
    stubFetch(200, { enabled: true });
    expect(await authEnabled()).toBe(true);
    stubFetch(200, { enabled: false });
    expect(await authEnabled()).toBe(false);
    // An older collector without the route.
    stubFetch(404, { error: "no route for /api/v1/auth" });
    expect(await authEnabled()).toBe(false);
  });
});

describe("the tenant switcher", () => {
  it("is a list for listed tenants, a text field for every tenant, nothing for one", () => {
    expect(tenantChoice(session)).toEqual({ kind: "select", options: ["a", "b"] });
    expect(tenantChoice({ ...session, tenants: "*" })).toEqual({ kind: "text" });
    expect(tenantChoice({ ...session, tenants: ["a"] })).toEqual({ kind: "fixed" });
  });
});
