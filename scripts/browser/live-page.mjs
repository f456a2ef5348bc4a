// The live breaker page in a real browser: headless Chromium opens payment's GET /live, and
// with the page left alone (no reload) the test turns shipment's fault on through /chaos,
// waits for the page to say `open` for payment's breaker, clears the fault, and waits for
// `closed`. Orders are sent meanwhile, since a breaker only moves when it is called.
//
// Run by scripts/steps/h14-watch.sh; the environment says where things are:
//   PLAYWRIGHT_CORE  the playwright-core package folder   CHROMIUM_BIN  the browser
//   ORDER, PAYMENT, SHIPMENT  the services' base URLs    OUT_DIR  where screenshots go
// Exits non-zero, saying which step failed, when the page does not show what it should.

import { pathToFileURL } from "node:url";
import path from "node:path";
import fs from "node:fs";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const { chromium } = await import(pathToFileURL(path.join(env("PLAYWRIGHT_CORE"), "index.mjs")).href);
const [order, payment, shipment, outDir] = ["ORDER", "PAYMENT", "SHIPMENT", "OUT_DIR"].map(env);
const WAIT_MS = 60_000;
const SEED = { id: "1", items: [], payment: { amount: 0, id: "1", shipment: { id: "1", directions: "home" } } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => console.log(`[live-page] ${msg}`);

async function chaos(method, body) {
  const res = await fetch(`${shipment}/chaos`, {
    method,
    headers: { "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${method} /chaos answered ${res.status}: ${await res.text()}`);
}

// Orders every 100 ms until stopped; their answers don't matter here, the page does.
let driving = true;
let sent = 0;
const driver = (async () => {
  while (driving) {
    await fetch(`${order}/create`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(SEED),
    }).then((r) => r.arrayBuffer(), () => {});
    sent++;
    await sleep(100);
  }
})();

fs.mkdirSync(outDir, { recursive: true });
const browser = await chromium.launch({
  executablePath: env("CHROMIUM_BIN"),
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  page.on("console", (m) => m.type() === "error" && log(`page console error: ${m.text()}`));
  await page.goto(`${payment}/live`);
  // Set once; still there at the end means the page was never reloaded.
  await page.evaluate(() => { window.__loadedOnce = true; });

  const state = page.locator("#state");
  const waitFor = async (text, what) => {
    const t0 = Date.now();
    await state.filter({ hasText: new RegExp(`^${text}$`) }).waitFor({ timeout: WAIT_MS });
    log(`${what}: the page shows ${text} after ${Date.now() - t0} ms`);
  };

  await page.locator("#breaker-name", { hasText: "payment->shipment" }).waitFor({ timeout: WAIT_MS });
  await waitFor("closed", "start");
  await page.screenshot({ path: path.join(outDir, "live-page-closed.png") });

  await chaos("PUT", { error_rate: 1, status: 502 });
  log("shipment fails every call now");
  await waitFor("open", "fault on");
  await page.locator("#notes li.ev-open").first().waitFor({ timeout: WAIT_MS });
  await sleep(1500); // a few more events and outcomes on the picture
  await page.screenshot({ path: path.join(outDir, "live-page-open.png") });

  await chaos("DELETE");
  log("fault cleared");
  await waitFor("closed", "fault off");
  await page.locator("#notes li.ev-close").first().waitFor({ timeout: WAIT_MS });
  await page.screenshot({ path: path.join(outDir, "live-page-closed-again.png") });

  if (!(await page.evaluate(() => window.__loadedOnce === true))) {
    throw new Error("the page was reloaded: it should update over SSE alone");
  }
  const notes = await page.locator("#notes li").allTextContents();
  log(`ok: ${sent} orders sent; latest events on the page: ${notes.slice(0, 5).join(" | ")}`);
} catch (e) {
  failed = true;
  console.error(`[live-page] FAILED: ${e.message}`);
  await browser.contexts()[0]?.pages()[0]?.screenshot({ path: path.join(outDir, "live-page-failure.png") }).catch(() => {});
} finally {
  driving = false;
  await driver;
  await chaos("DELETE").catch(() => {});
  await browser.close();
}
process.exit(failed ? 1 : 0);
