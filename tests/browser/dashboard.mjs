// The dashboard in Debian's headless chromium (run by tests/integration/http_dashboard.py,
// which starts the real jarvis serve and passes its URL and tokens in the environment).
import { chromium } from "playwright-core";

const { JARVIS_URL: url, OP_TOKEN: op, READ_TOKEN: reader, SHOTS: shots, SECRET: secret } = process.env;

function check(ok, what) {
  if (!ok) {
    console.log("FAIL: " + what);
    process.exit(1);
  }
}

// page.waitForFunction polls by eval, which the dashboard's CSP forbids: poll with evaluate.
async function waitFor(page, fn, arg, timeout = 15000) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await page.evaluate(fn, arg)) return;
    if (Date.now() > end) throw new Error("timed out waiting for " + fn.toString().slice(0, 120));
    await page.waitForTimeout(50);
  }
}

async function apiCall(method, path, token, body) {
  const r = await fetch(url + "/api/v1" + path, {
    method, headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json() };
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Refused requests (401 before login, the CSRF probe) are expected; script errors are not.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });

  // Not logged in: the login form. A wrong token is refused on the page.
  await page.goto(url + "/");
  await page.waitForSelector("#token");
  await page.fill("#token", "jv_wrong");
  await page.click("#login");
  await waitFor(page, () => document.getElementById("login-error").textContent.includes("unknown or revoked"));
  await page.fill("#token", op);
  await page.click("#login");
  await page.waitForSelector("#recent, #none-in-flight");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "jarvis_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "session cookie HttpOnly, SameSite=Strict: " + JSON.stringify(cookies));
  check(!cookies.some((c) => c.value === op), "the token itself is not a cookie");
  check(!(await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage))).includes("jv_"),
        "no token in the page's storage");
  check((await page.textContent("#who")).includes("http:op (operate)"), "who is logged in");

  // A deploy started elsewhere (the API) shows up in flight, and its stages turn green live.
  const d = await apiCall("POST", "/deploy", op, { design: "loki" });
  check(d.status === 202, "deploy: " + JSON.stringify(d));
  const id = d.body.job.id;
  await page.waitForSelector(`#in-flight tr[data-job="${id}"]`, { timeout: 10000 });
  await page.waitForSelector(`#in-flight tr[data-job="${id}"] .progress span.ok[data-stage="1"]`, { timeout: 10000 });
  // The job page: the timeline's bars go green one after the other while the page stays open.
  await page.click(`#in-flight tr[data-job="${id}"] a[href="#/job/${id}"]`);
  await page.waitForSelector("#timeline");
  const seen = new Set();
  for (let i = 0; i < 200 && seen.size < 3; i++) {
    const results = await page.$$eval("#timeline .tl-row", (rows) => rows.map((r) => r.dataset.result));
    results.forEach((r, k) => { if (r === "ok") seen.add(k + 1); });
    if (results.includes("running") && results.includes("pending")) seen.add("partial");
    await page.waitForTimeout(50);
  }
  await waitFor(page, () => [...document.querySelectorAll("#timeline .tl-row")].every((r) => r.dataset.result === "ok"));
  check(seen.has("partial"), "a stage was seen running while later ones were pending (live, without reload)");
  await waitFor(page, () => document.getElementById("summary").textContent.includes("ready"), null, 10000);
  const logText = await page.textContent("#log");
  check(logText.includes("logging in with [redacted]"), "the log tail: " + logText.slice(0, 300));
  check(!(await page.content()).includes(secret), "the secret is not on the page");
  await page.screenshot({ path: shots + "/job.png", fullPage: true });

  // A failing job: its stage is marked failed with the reason, later stages never ran.
  const f = await apiCall("POST", "/deploy", op, { design: "flaky" });
  check(f.status === 202, "deploy flaky: " + JSON.stringify(f));
  await page.goto(url + "/#/job/" + f.body.job.id);
  await page.waitForSelector('#timeline .tl-row[data-stage="2"][data-result="failed"]', { timeout: 15000 });
  const reason = await page.textContent('#timeline .tl-row[data-stage="2"] .reason');
  check(reason.includes("broken on purpose"), "the failure's reason on the timeline: " + reason);
  check((await page.getAttribute('#timeline .tl-row[data-stage="3"]', "data-result")) === "pending", "stage 3 never ran");
  await page.waitForSelector("#retry");
  await page.screenshot({ path: shots + "/job-failed.png", fullPage: true });

  // Cancel a long job from its page (operators only).
  const s = await apiCall("POST", "/deploy", op, { design: "slowpoke" });
  check(s.status === 202, "deploy slowpoke: " + JSON.stringify(s));
  const slow = s.body.job.id;
  await page.goto(url + "/#/job/" + slow);
  await page.waitForSelector("#cancel");
  page.once("dialog", (dialog) => dialog.accept());
  await page.click("#cancel");
  await waitFor(page, () => document.getElementById("summary").textContent.includes("cancel"), null, 15000);
  await page.waitForSelector("#retry", { timeout: 15000 });
  await page.screenshot({ path: shots + "/cancelled.png", fullPage: true });

  // CSRF: a state-changing request from the page without the token is refused.
  const forged = await page.evaluate(async (jobId) => {
    const r = await fetch(`/api/v1/jobs/${jobId}/retry`, { method: "POST", credentials: "same-origin" });
    return r.status;
  }, slow);
  check(forged === 403, "POST with the cookie but no X-CSRF-Token: " + forged);

  // The audit page: who did what, filterable.
  await page.goto(url + "/#/audit");
  await page.waitForSelector("#audit tbody tr");
  const audit = await page.textContent("#audit");
  check(audit.includes("http:op") && audit.includes("cancel " + slow) && audit.includes("dashboard login"), "audit: " + audit.slice(0, 500));
  check(audit.includes("CSRF"), "the CSRF refusal is audited");
  await page.fill('input[name="who"]', "http:op");
  await page.fill('input[name="host"]', "loki");
  await page.click(".filters button");
  await waitFor(page, () => location.hash.includes("host=loki"));
  // The unfiltered rows stay on screen until the filtered answer replaces them.
  await waitFor(page, () => {
    const trs = [...document.querySelectorAll("#audit tbody tr")];
    return trs.length >= 1 && trs.every((t) => t.textContent.includes("loki"));
  }).catch(() => {});
  const rows = await page.$$eval("#audit tbody tr", (trs) => trs.map((t) => t.textContent));
  check(rows.length >= 1 && rows.every((r) => r.includes("loki")), "filtered audit rows all about loki: " + rows);
  await page.screenshot({ path: shots + "/audit.png", fullPage: true });

  // The host page.
  await page.goto(url + "/#/host/loki");
  await page.waitForSelector(`table.jobs tr[data-job="${id}"]`);

  // A reader sees no cancel or retry buttons.
  const other = await browser.newContext();
  const rp = await other.newPage();
  await rp.goto(url + "/");
  await rp.waitForSelector("#token");
  await rp.fill("#token", reader);
  await rp.click("#login");
  await rp.waitForSelector("#recent, #none-in-flight");
  await rp.goto(url + "/#/job/" + slow);
  await rp.waitForSelector("#timeline");
  check(!(await rp.$("#retry")) && !(await rp.$("#cancel")), "no retry or cancel for a reader");
  // Log out: the cookie no longer works.
  await rp.click("#logout");
  await rp.waitForSelector("#token");
  const after = await rp.evaluate(async () => (await fetch("/api/v1/jobs")).status);
  check(after === 401, "after logout: " + after);
  check(errors.length === 0, "no errors on the page: " + errors.join("; "));
  console.log("dashboard ok");
} finally {
  await browser.close();
}
