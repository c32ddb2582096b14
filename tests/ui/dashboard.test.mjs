// The dashboard in a real browser (Debian's Chromium, driven by
// playwright-core), against real agents that tests/it/dashboard.rs starts:
//   NEXUS_URL, WRITER_KEY, READER_KEY, DATA_DIR: the main agent;
//   SHORT_URL, SHORT_KEY: an agent whose sessions last 2 s;
//   SCREENSHOTS: where each page's picture goes.
// Exits 0 when every check held; else prints the first that did not, 1.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const URL = env("NEXUS_URL");
const DATA = env("DATA_DIR");
const SHOTS = env("SCREENSHOTS");
fs.mkdirSync(SHOTS, { recursive: true });

const write = (rel, text) => {
  const p = path.join(DATA, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, text);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run"],
});

async function signIn(page, url, key) {
  await page.goto(url + "/");
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
}

const steps = [];
async function step(name, fn) {
  const started = Date.now();
  await fn();
  steps.push(`${name} (${Date.now() - started} ms)`);
  console.log(`ok: ${name}`);
}

let failed = false;
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const consoleLines = [];
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => consoleLines.push(`page error: ${e.message}`));
try {

  await step("a wrong key is refused at sign-in", async () => {
    await page.goto(URL + "/");
    await page.getByLabel("API key").fill("nxk_0000000000000000_nope");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: /not valid|malformed/ }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, "sign-in.png") });
  });

  await step("sign in: the key becomes an HttpOnly session cookie, not kept by the page", async () => {
    await signIn(page, URL, env("WRITER_KEY"));
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "nexus_session");
    assert.ok(session, "a session cookie");
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, "Strict");
    assert.ok(session.expires > Date.now() / 1000, "it expires");
    const stored = await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie);
    assert.ok(!stored.includes("nxk_"), `the key is not stored: ${stored}`);
    await page.getByRole("cell", { name: "echoer", exact: true }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, "overview.png") });
  });

  await step("a file written appears as a run and finishes without a reload", async () => {
    await page.getByRole("link", { name: "Runs" }).click();
    await page.locator('table[data-live="true"]').waitFor();
    write("in/hello.txt", "hello from the browser test\n");
    const row = page.locator("tr", { hasText: "/in/hello.txt" });
    await row.waitFor();
    await row.locator('[data-status="succeeded"]').waitFor();
    await page.screenshot({ path: path.join(SHOTS, "runs.png") });
    await row.getByRole("link").click();
    await page.getByRole("heading", { name: /^Run run_/ }).waitFor();
    await page.locator("pre.stdout", { hasText: "hello from the browser test" }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, "run.png"), fullPage: true });
  });

  await step("a long run is cancelled from its page", async () => {
    write("long/a.txt", "a");
    await page.goto(URL + "/#/runs?workflow=long");
    const row = page.locator("tr", { hasText: "/long/a.txt" });
    await row.locator('[data-status="running"]').waitFor();
    await row.getByRole("link").click();
    await page.locator("#live-log", { hasText: "waiting" }).waitFor();
    await page.getByRole("button", { name: "Cancel run" }).click();
    await page.locator('#run-status [data-status="cancelled"]').waitFor();
  });

  await step("a failed run is re-run from the failed step", async () => {
    write("flaky/a.txt", "a");
    await page.goto(URL + "/#/runs?workflow=flaky");
    const row = page.locator("tr", { hasText: "/flaky/a.txt" });
    await row.locator('[data-status="failed"]').waitFor();
    await row.getByRole("link").click();
    write("fixed", "");
    const first = page.url();
    await page.getByRole("button", { name: "Re-run from the failed step" }).click();
    await page.waitForURL((u) => u.toString() !== first);
    await page.getByText("Re-run of").waitFor();
    await page.locator('#run-status [data-status="succeeded"]').waitFor();
    // The step before the failed one did not run again.
    const marks = fs.readFileSync(path.join(DATA, "marks.log"), "utf8").trim().split("\n");
    assert.equal(marks.length, 1, `prepare ran once: ${marks}`);
  });

  await step("a paused workflow's next file is skipped", async () => {
    await page.goto(URL + "/#/");
    await page.getByRole("button", { name: "Pause echoer" }).click();
    await page.locator('tr[data-workflow="echoer"] [data-status="paused"]').waitFor();
    await page.goto(URL + "/#/runs?workflow=echoer");
    await page.locator('table[data-live="true"]').waitFor();
    write("in/paused.txt", "p");
    await page.locator("tr", { hasText: "/in/paused.txt" }).locator('[data-status="skipped"]').waitFor();
    await page.goto(URL + "/#/");
    await page.getByRole("button", { name: "Resume echoer" }).click();
    await page.locator('tr[data-workflow="echoer"] [data-status="active"]').waitFor();
  });

  await step("the Why page explains a file no workflow took", async () => {
    write("ignored/data.bin", "x");
    await page.getByRole("link", { name: "Why" }).click();
    await page.getByLabel("File", { exact: true }).fill("/ignored/data.bin");
    // Asked again until the file's event is recorded (it settles first).
    const noneMatched = page.getByText("No workflow's pattern matched this path").first();
    const deadline = Date.now() + 30000;
    for (;;) {
      await page.getByRole("button", { name: "Explain" }).click();
      if (await noneMatched.waitFor({ timeout: 1000 }).then(() => true, () => false)) break;
      if (Date.now() > deadline) throw new Error("the file's event was never shown");
    }
    const echoer = page.locator('#hypothetical tr[data-workflow="echoer"]');
    await echoer.locator(".reason", { hasText: "no pattern matched (patterns: /in/*.txt)" }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, "why.png"), fullPage: true });
    // A file that did start a run: its decision links to it.
    await page.getByLabel("File", { exact: true }).fill("/in/hello.txt");
    await page.getByRole("button", { name: "Explain" }).click();
    await page.locator("#events li", { hasText: "pattern `/in/*.txt` matched" }).first().waitFor();
    await page.locator('#hypothetical tr[data-workflow="echoer"] [data-status="run"]').waitFor();
  });

  await step("a same-site POST without the CSRF token is refused", async () => {
    const status = await page.evaluate(async () => {
      const r = await fetch("/v1/workflows/echoer/pause", { method: "POST" });
      return r.status;
    });
    assert.equal(status, 403);
  });

  await step("a forged cross-site POST carries no session and changes nothing", async () => {
    // A page of another site (localhost, not 127.0.0.1) posting a form to the agent.
    const evil = http.createServer((req, res) => {
      res.setHeader("content-type", "text/html");
      res.end(`<form id=f method=POST action="${URL}/v1/workflows/echoer/pause"></form><script>f.submit()</script>`);
    });
    await new Promise((ok) => evil.listen(0, "127.0.0.1", ok));
    const evilUrl = `http://localhost:${evil.address().port}/`;
    const reply = page.waitForResponse((r) => r.url().includes("/v1/workflows/echoer/pause"));
    await page.goto(evilUrl);
    const r = await reply;
    assert.equal(r.status(), 401, "no cookie crosses sites");
    evil.close();
    await page.goto(URL + "/#/");
    await page.locator('tr[data-workflow="echoer"] [data-status="active"]').waitFor();
  });

  await step("sign out ends the session", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in to nexusd" }).waitFor();
    await page.goto(URL + "/#/runs");
    await page.getByRole("heading", { name: "Sign in to nexusd" }).waitFor();
  });

  await step("a reader sees no write action", async () => {
    await signIn(page, URL, env("READER_KEY"));
    await page.getByRole("cell", { name: "echoer", exact: true }).waitFor();
    assert.equal(await page.getByRole("button", { name: /Pause|Resume/ }).count(), 0);
    await page.goto(URL + "/#/runs?workflow=flaky");
    const row = page.locator("tr", { hasText: "/flaky/a.txt" }).first();
    await row.getByRole("link").click();
    await page.getByRole("heading", { name: /^Run run_/ }).waitFor();
    assert.equal(await page.getByRole("button", { name: /Re-run|Cancel/ }).count(), 0);
  });

  await step("an expired session returns to sign-in", async () => {
    const other = await browser.newContext();
    const p = await other.newPage();
    p.on("console", (m) => consoleLines.push(`(short) ${m.type()}: ${m.text()}`));
    p.on("pageerror", (e) => consoleLines.push(`(short) page error: ${e.message}`));
    await signIn(p, env("SHORT_URL"), env("SHORT_KEY"));
    // Past the session's end (`--session-ttl` of that agent).
    await new Promise((ok) => setTimeout(ok, Number(env("SHORT_TTL_MS")) + 500));
    await p.getByRole("link", { name: "Runs" }).click();
    await p.getByRole("heading", { name: "Sign in to nexusd" }).waitFor();
    await p.getByText("Your session has ended").waitFor();
    await other.close();
  });

  await step("readable at 390 px wide", async () => {
    const narrow = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const p = await narrow.newPage();
    await signIn(p, URL, env("WRITER_KEY"));
    await p.getByRole("link", { name: "Runs" }).click();
    await p.locator("tr", { hasText: "/in/hello.txt" }).waitFor();
    const wide = await p.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 390, `no sideways scrolling: ${wide} px`);
    await p.screenshot({ path: path.join(SHOTS, "runs-390.png") });
    await narrow.close();
  });
} catch (err) {
  failed = true;
  console.error(`FAILED after: ${steps.join("; ")}`);
  console.error(err);
  console.error(`the page's console:\n${consoleLines.join("\n")}`);
  await page.screenshot({ path: path.join(SHOTS, "failure.png"), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
