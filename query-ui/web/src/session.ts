// Sign-in to a collector that has an auth file: the session lives in an
// HttpOnly cookie the page never sees; these calls start, read, switch and
// end it (`/api/v1/session`), and say whether sign-in is asked for at all
// (`/api/v1/auth`).

import { ApiError, callJson } from "./api";

/** The signed-in session, as the collector describes it. */
export interface SessionInfo {
  /** The token's name in the auth file. */
  name: string;
  /** The tenant the UI shows. */
  tenant: string;
  /** The tenants the token reaches; "*" for every tenant. */
  tenants: string[] | "*";
  /** What the session may do (always read only). */
  scopes: string[];
  /** When it ends (RFC 3339). */
  expires: string;
}

const quiet = { signInOn401: false };
const json = (body: unknown): RequestInit => ({
  body: JSON.stringify(body),
  headers: { "Content-Type": "application/json" },
});

/** Whether the collector asks the UI to sign in. */
export async function authEnabled(): Promise<boolean> {
  try {
    const r = await callJson<{ enabled?: boolean }>("/api/v1/auth", {}, quiet);
    return r?.enabled === true;
  } catch (e) {
    // A collector without the route has no sign-in.
    if (e instanceof ApiError && e.status === 404) return false;
    throw e;
  }
}

/** The current session; null when not signed in (or it ended). */
export async function currentSession(): Promise<SessionInfo | null> {
  try {
    return await callJson<SessionInfo>("/api/v1/session", {}, quiet);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

/** The body of a sign-in: the tenant only when one was typed. */
export function signInBody(token: string, tenant: string): { token: string; tenant?: string } {
  const t = tenant.trim();
  return t ? { token: token.trim(), tenant: t } : { token: token.trim() };
}

/** Signs in with a token. */
export function signIn(token: string, tenant = ""): Promise<SessionInfo> {
  return callJson<SessionInfo>("/api/v1/session", { method: "POST", ...json(signInBody(token, tenant)) }, quiet);
}

/** Switches the session to another of its token's tenants. */
export function switchTenant(tenant: string): Promise<SessionInfo> {
  return callJson<SessionInfo>("/api/v1/session", { method: "PUT", ...json({ tenant: tenant.trim() }) }, quiet);
}

/** Ends the session. */
export async function signOut(): Promise<void> {
  await callJson<null>("/api/v1/session", { method: "DELETE" }, quiet);
}

/** How the header offers the session's other tenants. */
export type TenantChoice = { kind: "fixed" } | { kind: "select"; options: string[] } | { kind: "text" };

export function tenantChoice(s: SessionInfo): TenantChoice {
  if (s.tenants === "*") return { kind: "text" };
  if (s.tenants.length > 1) return { kind: "select", options: s.tenants };
  return { kind: "fixed" };
}

/** What the sign-in form says when the collector refuses a token. */
export function signInMessage(e: unknown): string {
  if (!(e instanceof ApiError)) return `Sign-in failed: ${(e as Error)?.message ?? e}`;
  if (e.status === 401) return "Unknown token: it is not listed in the collector's auth file (or was revoked).";
  if (e.status === 0) return e.message;
  return e.detail || e.message;
}
