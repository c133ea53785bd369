// Shared helpers for the browser checks: start Debian's chromium through
// playwright-core (no downloaded browser builds on these machines).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

// Root needs --no-sandbox; the closed network makes chromium slow unless its
// background traffic (updates, sync, QUIC probes) is switched off.
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * Starts headless chromium with a fresh, empty profile in a temp dir.
 * Returns { context, page, close }: `page` is the tab the browser opened,
 * `close()` shuts the browser down and deletes the profile dir (which is also
 * deleted if the process exits without calling it).
 */
export async function launch({ executablePath = CHROMIUM_PATH, args = [], timeout = 30_000 } = {}) {
  const userDataDir = mkdtempSync(path.join(tmpdir(), "e2e-chromium-"));
  const removeDir = () => rmSync(userDataDir, { recursive: true, force: true, maxRetries: 5 });
  process.once("exit", removeDir);

  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      chromiumSandbox: false,
      args: [...CHROMIUM_ARGS, ...args],
      timeout,
      viewport: { width: 1100, height: 800 },
    });
  } catch (err) {
    removeDir();
    process.removeListener("exit", removeDir);
    throw new Error(`could not start chromium at ${executablePath}: ${err.message}`);
  }

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    try {
      await context.close();
    } finally {
      removeDir();
      process.removeListener("exit", removeDir);
    }
  };

  const page = context.pages()[0] ?? (await context.newPage());
  return { context, page, close };
}

/**
 * Records what a page does, for failure reports: console errors into
 * `consoleErrors`, and every request with its outcome into `requests`
 * ({ method, url, outcome }, in the order they were made).
 */
export function watch(page, consoleErrors, requests) {
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => consoleErrors.push(`uncaught: ${err.message}`));
  const byRequest = new Map();
  page.on("request", (req) => {
    if (req.url().startsWith("data:")) return;
    const entry = { method: req.method(), url: req.url(), outcome: "pending (no answer yet)" };
    byRequest.set(req, entry);
    requests.push(entry);
  });
  page.on("requestfinished", async (req) => {
    const entry = byRequest.get(req);
    if (!entry) return;
    const res = await req.response().catch(() => null);
    entry.outcome = res ? `HTTP ${res.status()}` : "finished without a response";
  });
  page.on("requestfailed", (req) => {
    const entry = byRequest.get(req);
    if (!entry) return;
    const status = entry.outcome.startsWith("HTTP") ? `${entry.outcome}, then ` : "";
    entry.outcome = `${status}failed: ${req.failure()?.errorText ?? "unknown error"}`;
  });
  page.on("response", (res) => {
    const entry = byRequest.get(res.request());
    if (entry) entry.outcome = `HTTP ${res.status()}`;
  });
}
