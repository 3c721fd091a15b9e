// Web UI sign-in end to end: Chromium (Debian's, through playwright-core)
// against `periscope serve` with an auth file and TLS on every listener.
// This script makes its own CA and certificate (openssl), tokens
// (`periscope token new`), data directory and collector; run.sh passes
// PERISCOPE_BIN and CHROMIUM.
//
// Checks: the sign-in page shows instead of the pages; a wrong token is an
// error on the form; a good one shows its tenant's records and keeps the
// URL's view; the session cookie is HttpOnly, SameSite=Strict and Secure;
// every API call carries X-Periscope-Request; switching tenant (a list for
// listed tenants, a text field for a token of every tenant) shows the
// other tenant's records; a reload keeps the session; signing out returns
// to the sign-in page; a token revoked in the auth file (then SIGHUP) sends
// the next call back to the sign-in page.

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const BIN = process.env.PERISCOPE_BIN;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "screenshots");
if (!BIN) throw new Error("set PERISCOPE_BIN to the periscope binary");

const failures = [];
let current = "";
function check(cond, msg) {
  if (!cond) {
    failures.push(`${current}: ${msg}`);
    console.error(`  FAIL ${msg}`);
  } else {
    console.log(`  ok   ${msg}`);
  }
}

async function until(what, f, timeout = 30_000) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

async function step(name, f) {
  current = name;
  console.log(`- ${name}`);
  try {
    await f();
  } catch (e) {
    failures.push(`${name}: ${e.message}`);
    console.error(`  FAIL ${e.message}`);
  }
}

// ----- certificates, tokens, the collector -----

const dir = mkdtempSync(join(tmpdir(), "periscope-signin-"));
const file = (n) => join(dir, n);
const openssl = (...args) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
  "-subj", "/CN=periscope sign-in test CA", "-keyout", file("ca.key"), "-out", file("ca.pem"),
  "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
  "-subj", "/CN=127.0.0.1", "-keyout", file("tls.key"), "-out", file("tls.csr"));
writeFileSync(file("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
openssl("x509", "-req", "-in", file("tls.csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"), "-CAcreateserial",
  "-days", "2", "-extfile", file("ext.cnf"), "-out", file("tls.crt"));
const CA = readFileSync(file("ca.pem"));

function newToken(name, tenants, scopes) {
  const args = ["token", "new", "--name", name, "--scope", scopes, ...tenants.flatMap((t) => ["--tenant", t])];
  const out = execFileSync(BIN, args, { encoding: "utf8" });
  const [token, ...rest] = out.split("\n");
  return { token, block: rest.join("\n") };
}
const tokens = {
  writer: newToken("writer", ["shop", "lab"], "write"),
  team: newToken("team", ["shop", "lab"], "read"),
  ops: newToken("ops", ["*"], "read"),
};
const writeAuth = () =>
  writeFileSync(file("auth.toml"), Object.values(tokens).map((t) => t.block).join("\n"));
writeAuth();

mkdirSync(SHOTS, { recursive: true });
const proc = spawn(
  BIN,
  ["serve", "--data-dir", file("data"), "--auth-file", file("auth.toml"),
    "--tls-cert-file", file("tls.crt"), "--tls-key-file", file("tls.key"),
    "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
  {
    stdio: ["ignore", "pipe", "pipe"],
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("PERISCOPE_"))),
  },
);
process.on("exit", () => {
  if (proc.exitCode === null) proc.kill("SIGKILL");
});
const log = [];
proc.stderr.on("data", (b) => log.push(b.toString()));
const listening = await new Promise((resolve, reject) => {
  const rl = createInterface({ input: proc.stdout });
  rl.once("line", (l) => resolve(JSON.parse(l)));
  proc.once("exit", (c) => reject(new Error(`periscope exited with ${c}: ${log.join("")}`)));
});
const BASE = `https://${listening.http}`;
const OTLP = `https://${listening.otlp_http}`;
console.log(`periscope serve with --auth-file and TLS at ${BASE}`);

/** An HTTPS call trusting the test CA; the JSON answer or the text. */
function call(url, { method = "GET", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method, headers, ca: CA }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        let json = null;
        try {
          json = JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode, json, text });
      });
    });
    req.on("error", reject);
    if (body) req.write(body);
    req.end();
  });
}

await until("readyz", async () => (await call(`${BASE}/readyz`)).status === 200);

// One record per tenant, both with the common term.
const term = `signin${randomBytes(4).toString("hex")}`;
const now = String(BigInt(Date.now()) * 1_000_000n);
for (const tenant of ["shop", "lab"]) {
  const r = await call(`${OTLP}/v1/logs`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${tokens.writer.token}`, "X-Scope-OrgID": tenant },
    body: JSON.stringify({
      resourceLogs: [{
        resource: { attributes: [{ key: "service.name", value: { stringValue: `signin-${tenant}` } }] },
        scopeLogs: [{ logRecords: [{ timeUnixNano: now, severityNumber: 9, severityText: "INFO", body: { stringValue: `${tenant} record ${term}` } }] }],
      }],
    }),
  });
  if (r.status !== 200) throw new Error(`OTLP for ${tenant}: ${r.status} ${r.text}`);
}
for (const tenant of ["shop", "lab"]) {
  await until(`${tenant} searchable`, async () => {
    const r = await call(`${BASE}/api/v1/logs/search?q=${term}`, {
      headers: { Authorization: `Bearer ${tokens.team.token}`, "X-Scope-OrgID": tenant },
    });
    return r.status === 200 && r.json.hits.length === 1;
  });
}

// ----- the browser -----

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
// The test CA is not in Chromium's store: certificate errors are ignored,
// the connection is TLS all the same (the cookie's Secure flag needs it).
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: true });
await context.route(/^(?!https:\/\/127\.0\.0\.1)/, (route) => route.abort());
const page = await context.newPage();
page.setDefaultTimeout(20_000);
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));
page.on("console", (m) => {
  // Chromium logs every refused call; those are the test's own doing.
  if (m.type() === "error" && !/Failed to load resource/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
});
const apiCalls = [];
page.on("request", (r) => {
  if (new URL(r.url()).pathname.startsWith("/api/")) apiCalls.push({ url: r.url(), header: r.headers()["x-periscope-request"] });
});
const shot = (name) => page.screenshot({ path: join(SHOTS, `${name}.png`) });
const rows = () => page.getByTestId("log-body");
const bodies = async () => (await rows().allTextContents()).map((t) => t.trim());
const signInForm = page.getByTestId("signin");
const account = page.getByTestId("account");
const session = async () => (await context.cookies()).find((c) => c.name === "periscope_session");

async function signInWith(token, tenant = "") {
  await page.getByTestId("signin-token").fill(token);
  await page.getByTestId("signin-tenant").fill(tenant);
  await page.getByRole("button", { name: "Sign in" }).click();
}

await step("the sign-in page stands in for the pages", async () => {
  await page.goto(`${BASE}/logs?q=${term}`);
  await signInForm.waitFor();
  check(await signInForm.isVisible(), "the sign-in form shows");
  check(!(await page.getByRole("navigation", { name: "Pages" }).isVisible()), "the page links are hidden");
  check((await page.getByTestId("log-query").count()) === 0, "no page is mounted");
  await shot("signin");
});

await step("a wrong token is refused on the form", async () => {
  await signInWith("pscp_" + "0".repeat(64));
  const err = page.getByTestId("signin-error");
  await until("error text", async () => (await err.textContent()).length > 0, 10_000);
  check(/Unknown token/.test(await err.textContent()), `the form says so (${await err.textContent()})`);
  check((await session()) === undefined, "no session cookie");
});

await step("a good token shows its first tenant's records, in the view asked for", async () => {
  await signInWith(tokens.team.token);
  await until("records", async () => (await rows().count()) === 1);
  check((await bodies())[0].includes(`shop record ${term}`), "the shop record, not the lab one");
  check((await page.getByTestId("log-query").inputValue()) === term, "the URL's query is kept");
  check((await account.getAttribute("data-tenant")) === "shop", "the header shows tenant shop");
  check((await page.getByTestId("tenant-select").inputValue()) === "shop", "with a list of the token's tenants");
  const c = await session();
  check(c !== undefined, "a session cookie is set");
  check(c?.httpOnly === true, "HttpOnly");
  check(c?.sameSite === "Strict", `SameSite=Strict (${c?.sameSite})`);
  check(c?.secure === true, "Secure");
  check(c?.path === "/", "Path=/");
  check(c && c.expires > Date.now() / 1000 + 11 * 3600, "lasts the default 12 h");
  check(!(c?.value ?? "").includes(tokens.team.token), "the cookie does not hold the token");
  check(!(await page.evaluate(() => document.cookie)).includes("periscope_session"), "scripts cannot read it");
  await shot("signed-in");
});

await step("switching tenant shows the other tenant's records", async () => {
  await page.getByTestId("tenant-select").selectOption("lab");
  await until("lab tenant", async () => (await account.getAttribute("data-tenant")) === "lab");
  await until("lab record", async () => (await bodies()).some((b) => b.includes(`lab record ${term}`)));
  check((await bodies()).length === 1 && (await bodies())[0].includes("lab record"), "only the lab record");
});

await step("a reload keeps the session and its tenant", async () => {
  await page.reload();
  await until("records after reload", async () => (await rows().count()) === 1);
  check((await bodies())[0].includes(`lab record ${term}`), "still tenant lab");
  check((await signInForm.count()) === 0, "no sign-in page");
});

await step("signing out returns to the sign-in page", async () => {
  await page.getByTestId("sign-out").click();
  await signInForm.waitFor();
  check(await signInForm.isVisible(), "the sign-in form shows");
  check((await session()) === undefined, "the cookie is gone");
  await page.reload();
  await signInForm.waitFor();
  check(true, "and stays after a reload");
});

await step("a token of every tenant names one, then switches in a text field", async () => {
  await signInWith(tokens.ops.token);
  const err = page.getByTestId("signin-error");
  await until("error text", async () => (await err.textContent()).length > 0, 10_000);
  check(/enter the tenant/.test(await err.textContent()), `asks for a tenant (${await err.textContent()})`);
  await signInWith(tokens.ops.token, "lab");
  await until("lab record", async () => (await bodies()).some((b) => b.includes(`lab record ${term}`)));
  check(true, "signed in to lab");
  const input = page.getByTestId("tenant-input");
  check((await input.inputValue()) === "lab", "a text field holds the tenant");
  await input.fill("shop");
  await input.press("Enter");
  await until("shop tenant", async () => (await account.getAttribute("data-tenant")) === "shop");
  await until("shop record", async () => (await bodies()).some((b) => b.includes(`shop record ${term}`)));
  check((await bodies()).length === 1, "only the shop record");
  await shot("every-tenant");
});

await step("a revoked token's session ends at the next call", async () => {
  delete tokens.ops;
  writeAuth();
  proc.kill("SIGHUP");
  // The next call the page makes is refused: a new search.
  await until("sign-in after revocation", async () => {
    if (await signInForm.isVisible()) return true;
    const q = page.getByTestId("log-query");
    await q.fill(`${term} OR x${Date.now()}`, { timeout: 2000 });
    await q.press("Enter", { timeout: 2000 });
    await new Promise((r) => setTimeout(r, 500));
    return signInForm.isVisible();
  }, 15_000);
  check(await signInForm.isVisible(), "the sign-in page is back");
  check(/session ended/.test(await signInForm.textContent()), "saying the session ended");
  await shot("revoked");
});

current = "whole run";
const missing = apiCalls.filter((c) => c.header !== "1");
check(apiCalls.length > 5 && missing.length === 0, `every API call carried X-Periscope-Request (${apiCalls.length} calls; without: ${missing.map((c) => c.url).join(", ")})`);
check(pageErrors.length === 0, `no page errors (${pageErrors.join(" | ")})`);
await browser.close();
proc.kill("SIGTERM");
await new Promise((r) => proc.once("exit", r));
const leaked = log.join("").includes(tokens.team.token);
check(!leaked, "no token in the collector's log");
if (failures.length) {
  console.error(`\n${failures.length} failure(s):\n${failures.map((f) => `  - ${f}`).join("\n")}`);
  console.error(`--- last lines of the periscope log ---\n${log.join("").split("\n").slice(-30).join("\n")}`);
  console.error(`files kept in ${dir}`);
  process.exit(1);
}
rmSync(dir, { recursive: true, force: true });
console.log("\nall sign-in checks passed");
