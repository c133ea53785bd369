// Browser check of the whole stack through the frontend page.
//
//   node e2e/stack.mjs <frontend-url>
//
// Opens the page, waits for its first visit (POST /api/visits from the
// browser) to succeed, clicks "Record another visit", and checks that the
// PostgreSQL count and the Redis counter each went up by exactly 1. On success
// prints one line of JSON to stdout and exits 0; on failure prints what went
// wrong (with the browser's console errors and the requests it made) to
// stderr and exits 1.
import { launch, watch } from "./lib.mjs";

const FIRST_LOAD_TIMEOUT_MS = 60_000; // `next dev` compiles the page on first load
const AGAIN_TIMEOUT_MS = 20_000;

class CheckError extends Error {}

const consoleErrors = [];
const requests = []; // { method, url, outcome }, in the order they were made

function fail(message) {
  throw new CheckError(message);
}

function report(message, frontendUrl) {
  const frontendOrigin = safeOrigin(frontendUrl);
  const lines = [`stack check FAILED: ${message}`, `  page: ${frontendUrl}`];

  const backend = requests.filter((r) => safeOrigin(r.url) !== frontendOrigin);
  lines.push("  requests to the backend:");
  if (backend.length === 0) lines.push("    (none)");
  for (const r of backend) lines.push(`    ${r.method} ${r.url} -> ${r.outcome}`);

  const badLocal = requests.filter(
    (r) => safeOrigin(r.url) === frontendOrigin && !/^HTTP [23]\d\d/.test(r.outcome),
  );
  if (badLocal.length > 0) {
    lines.push("  failed requests to the frontend:");
    for (const r of badLocal) lines.push(`    ${r.method} ${r.url} -> ${r.outcome}`);
  }

  lines.push("  browser console errors:");
  if (consoleErrors.length === 0) lines.push("    (none)");
  for (const e of consoleErrors) lines.push(`    ${e}`);
  process.stderr.write(lines.join("\n") + "\n");
}

function safeOrigin(url) {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}


// textContent, not innerText: the latter applies CSS text-transform.
const text = (page, id) =>
  page.getByTestId(id).textContent({ timeout: 5_000 }).then((s) => (s ?? "").trim());

async function readInt(page, id) {
  const raw = await text(page, id);
  const n = Number(raw);
  if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(n)) {
    fail(`expected a whole number in data-testid="${id}", got ${JSON.stringify(raw)}`);
  }
  return n;
}

async function readPort(page, id) {
  const raw = await text(page, id);
  return /^\d+$/.test(raw) ? Number(raw) : null;
}

async function readVisit(page) {
  return {
    visitId: await readInt(page, "visit-id"),
    postgresCount: await readInt(page, "postgres-count"),
    redisCounter: await readInt(page, "redis-counter"),
    backendPort: await readInt(page, "backend-port"),
  };
}

// Waits until data-testid=status is "ok" (and, if given, the visit id is no
// longer `previousId`) or "error"; fails with the page's error text on "error".
async function waitForVisit(page, what, timeout, previousId = null) {
  try {
    await page.waitForFunction(
      (prev) => {
        const q = (id) => document.querySelector(`[data-testid="${id}"]`)?.textContent?.trim();
        const status = q("status");
        if (status === "error") return true;
        return status === "ok" && (prev === null || q("visit-id") !== String(prev));
      },
      previousId,
      { timeout, polling: 100 },
    );
  } catch (err) {
    if (err?.name !== "TimeoutError") throw err;
    const status = await text(page, "status").catch(() => "(no data-testid=status on the page)");
    if (status === "ok" && previousId !== null) {
      fail(`${what}: the visit id stayed ${previousId} for ${timeout / 1000} s (no new visit was recorded)`);
    }
    fail(`${what}: data-testid=status did not become "ok" within ${timeout / 1000} s (it is ${JSON.stringify(status)})`);
  }
  if ((await text(page, "status")) === "error") {
    const error = await text(page, "error").catch(() => "(no data-testid=error text)");
    fail(`${what}: the page shows an error: ${error}`);
  }
}

async function main() {
  const frontendUrl = process.argv[2];
  if (!frontendUrl || process.argv.length > 3) {
    process.stderr.write("usage: node e2e/stack.mjs <frontend-url>\n");
    process.exit(1);
  }

  let browser;
  try {
    browser = await launch();
    const { page } = browser;
    watch(page, consoleErrors, requests);

    try {
      await page.goto(frontendUrl, { waitUntil: "domcontentloaded", timeout: FIRST_LOAD_TIMEOUT_MS });
    } catch (err) {
      fail(`could not open ${frontendUrl}: ${err.message.split("\n")[0]}`);
    }

    await waitForVisit(page, "first visit", FIRST_LOAD_TIMEOUT_MS);
    const first = await readVisit(page);

    await page.getByTestId("again").click({ timeout: 5_000 });
    await waitForVisit(page, 'after clicking "Record another visit"', AGAIN_TIMEOUT_MS, first.visitId);
    const second = await readVisit(page);

    const problems = [];
    if (second.postgresCount !== first.postgresCount + 1) {
      problems.push(`PostgreSQL count went ${first.postgresCount} -> ${second.postgresCount} (expected +1)`);
    }
    if (second.redisCounter !== first.redisCounter + 1) {
      problems.push(`Redis counter went ${first.redisCounter} -> ${second.redisCounter} (expected +1)`);
    }
    if (problems.length > 0) fail(problems.join("; "));

    const result = {
      ...second,
      backendUrl: await text(page, "backend-url"),
      ports: {
        backend: await readPort(page, "port-backend"),
        frontend: await readPort(page, "port-frontend"),
        postgres: await readPort(page, "port-postgres"),
        redis: await readPort(page, "port-redis"),
      },
    };
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  } catch (err) {
    report(err instanceof CheckError ? err.message : err?.stack ?? String(err), frontendUrl);
    return 1;
  } finally {
    await browser?.close().catch(() => {});
  }
}

process.exitCode = await main();
