// First render of the dashboard in Debian's headless chromium: from navigation to the recent
// jobs table on screen, logged in, median of RUNS loads. Run by bench/dashboard_render.py.
import { createRequire } from "module";

const require = createRequire(process.env.BROWSER_DIR + "/package.json");
const { chromium } = require("playwright-core");
const { JARVIS_URL: url, TOKEN: token } = process.env;
const runs = Number(process.env.RUNS || 9);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const page = await browser.newPage();
await page.goto(url + "/");
await page.waitForSelector("#token");
await page.fill("#token", token);
await page.click("#login");
await page.waitForSelector("#recent tbody tr");
const times = [];
for (let i = 0; i < runs; i++) {
  const t0 = Date.now();
  await page.goto(url + "/?load=" + i + "#/");  // a new document each time, not a hash change
  await page.waitForSelector("#recent tbody tr", { timeout: 30000 });
  times.push(Date.now() - t0);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ median: times[Math.floor(times.length / 2)], max: times[times.length - 1], times }));
await browser.close();
