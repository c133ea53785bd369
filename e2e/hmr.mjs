// Hot reload through the proxy of the named URLs.
//
//   node e2e/hmr.mjs <frontend-url> <page-file>
//
// Opens the page, waits for its heading and for Next's hot-reload WebSocket
// (to the page's own host and port: through the proxy), marks the window,
// adds a word to the heading in <page-file>, and waits until the page shows
// it without a reload (the mark survives). Puts the file back. Prints one
// line of JSON: {"websocket": url, "heading": text, "mark": value, "loads":
// pages loaded since the mark, "consoleErrors": [...]}. Exits 0 on
// success; on failure prints what went wrong to stderr and exits 1.
import { readFileSync, writeFileSync } from "node:fs";
import { launch, watch } from "./lib.mjs";

const LOAD_TIMEOUT_MS = 60_000; // `next dev` compiles the page on first load
const UPDATE_TIMEOUT_MS = 60_000;
const HEADING = "<h1>Stack check</h1>";
const EDITED = "<h1>Stack check, hot</h1>";

class CheckError extends Error {}

function fail(message) {
  throw new CheckError(message);
}

async function main() {
  const [frontendUrl, pageFile] = process.argv.slice(2);
  if (!frontendUrl || !pageFile || process.argv.length > 4) {
    process.stderr.write("usage: node e2e/hmr.mjs <frontend-url> <page-file>\n");
    return 1;
  }
  const original = readFileSync(pageFile, "utf8");
  if (!original.includes(HEADING)) {
    process.stderr.write(`${pageFile} has no ${HEADING}\n`);
    return 1;
  }
  const consoleErrors = [];
  const requests = [];
  const sockets = [];
  let browser;
  try {
    browser = await launch();
    const { page } = browser;
    watch(page, consoleErrors, requests);
    page.on("websocket", (ws) => sockets.push(ws.url()));
    await page.goto(frontendUrl, { waitUntil: "domcontentloaded", timeout: LOAD_TIMEOUT_MS });
    await page.waitForFunction(() => document.querySelector("h1")?.textContent === "Stack check", null, {
      timeout: LOAD_TIMEOUT_MS,
    });
    const own = new URL(frontendUrl);
    const hmr = () => sockets.find((url) => new URL(url).host === own.host && new URL(url).pathname.startsWith("/_next/"));
    for (const deadline = Date.now() + LOAD_TIMEOUT_MS; !hmr(); ) {
      if (Date.now() > deadline) fail(`no hot-reload WebSocket to ${own.host}; WebSockets: ${JSON.stringify(sockets)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // Hydrated, and nothing more to load: an edit now is an update, not a
    // first compile.
    await page.waitForLoadState("networkidle", { timeout: LOAD_TIMEOUT_MS });
    await page.evaluate(() => {
      window.__hmrMark = "kept";
    });
    let loads = 0;
    page.on("load", () => loads++);
    writeFileSync(pageFile, original.replace(HEADING, EDITED));
    try {
      await page.waitForFunction(() => document.querySelector("h1")?.textContent === "Stack check, hot", null, {
        timeout: UPDATE_TIMEOUT_MS,
        polling: 100,
      });
    } catch {
      const heading = await page.evaluate(() => document.querySelector("h1")?.textContent).catch(() => null);
      fail(`the page did not update within ${UPDATE_TIMEOUT_MS / 1000} s: its heading is ${JSON.stringify(heading)}`);
    }
    const mark = await page.evaluate(() => window.__hmrMark ?? null);
    const heading = await page.evaluate(() => document.querySelector("h1")?.textContent);
    process.stdout.write(JSON.stringify({ websocket: hmr(), heading, mark, loads, consoleErrors }) + "\n");
    return 0;
  } catch (err) {
    const lines = [`hot reload check FAILED: ${err instanceof CheckError ? err.message : err?.stack ?? err}`];
    lines.push(`  page: ${frontendUrl}`, "  requests:", ...requests.map((r) => `    ${r.method} ${r.url} -> ${r.outcome}`));
    lines.push("  console errors:", ...consoleErrors.map((e) => `    ${e}`));
    process.stderr.write(lines.join("\n") + "\n");
    return 1;
  } finally {
    writeFileSync(pageFile, original);
    await browser?.close().catch(() => {});
  }
}

process.exitCode = await main();
