// Browser check of the dashboard of `cargo xtask ui` / `cargo xtask dev`.
//
//   node e2e/dashboard.mjs <dashboard-url-with-token> <service-to-restart> <service-to-move> <new-port>
//
// Opens the page and waits until every service is listed, running, with a
// port; clicks Restart on <service-to-restart> and waits until it runs again
// under a new pid and is healthy; types <new-port> into <service-to-move>'s
// port input, clicks its button and waits until the row shows the new port,
// running and healthy (and every other service runs again). Prints one line
// of JSON to stdout:
//   {"services": {name: port}, "restarted": {"service", "before", "after"},
//    "moved": {"service", "port"}, "after": {name: port}}
//
//   node e2e/dashboard.mjs --no-token <dashboard-url-without-token>
//
// Opens the page without a token and checks that it explains the refusal, and
// that the API answers 403 to an action without a token and with a wrong one.
// Prints {"refused": true}.
//
// Both exit 0 on success; on failure they print what went wrong (the page's
// error banner, the rows as last seen, failed requests, console errors, and
// the path of a screenshot) to stderr and exit 1.
import { tmpdir } from "node:os";
import path from "node:path";
import { launch, watch } from "./lib.mjs";

const LOAD_TIMEOUT_MS = 120_000; // until every service is listed as running
const RESTART_TIMEOUT_MS = 120_000;
const MOVE_TIMEOUT_MS = 180_000;
const REFUSAL_TIMEOUT_MS = 30_000;
const POLL_MS = 200;

const USAGE = `usage: node e2e/dashboard.mjs <dashboard-url-with-token> <service-to-restart> <service-to-move> <new-port>
       node e2e/dashboard.mjs --no-token <dashboard-url-without-token>
`;

class CheckError extends Error {}

const consoleErrors = [];
const requests = []; // { method, url, outcome }, in the order they were made
let lastRows = null; // the rows as last read from the page

function fail(message) {
  throw new CheckError(message);
}

// The token must not end up in CI logs.
const redact = (s) => String(s).replace(/([?&]token=)[^&#\s]*/gi, "$1…");


// Everything the check looks at, read in one go from the page.
function readPage() {
  const q = (root, id) => root.querySelector(`[data-testid="${CSS.escape(id)}"]`);
  const text = (node) => (node ? (node.textContent ?? "").trim() : null);
  const banner = q(document, "error");
  // The banner's words, without its buttons' (a dismiss "×"), one space between its parts.
  const bannerText = (node) => {
    if (!node) return null;
    const copy = node.cloneNode(true);
    for (const b of copy.querySelectorAll("button")) b.remove();
    for (const b of copy.querySelectorAll("div")) b.prepend(" ");
    return copy.textContent.replace(/\s+/g, " ").trim();
  };
  const rows = [...document.querySelectorAll('[data-testid^="row-"]')].map((tr) => {
    const name = tr.dataset.testid.slice("row-".length);
    const get = (id) => text(q(tr, `${id}-${name}`));
    return {
      name,
      port: get("port"),
      state: get("state"),
      pid: get("pid"),
      health: get("health"),
      url: q(tr, `url-${name}`)?.getAttribute("href") ?? null,
      busy: q(tr, `busy-${name}`) !== null,
      busyText: get("busy"),
      note: text(q(document, `note-${name}`)) || null, // the line under the row, if any
    };
  });
  return {
    banner: bannerText(banner),
    bannerKind: banner?.dataset.kind ?? null,
    checkout: text(q(document, "checkout")),
    rows,
  };
}

async function snapshot(page) {
  const snap = await page.evaluate(readPage);
  lastRows = snap.rows;
  return snap;
}

const isPort = (s) => typeof s === "string" && /^\d+$/.test(s) && Number(s) >= 1 && Number(s) <= 65535;
const isPid = (s) => typeof s === "string" && /^\d+$/.test(s);
const row = (snap, name) => snap.rows.find((r) => r.name === name);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function describeRow(r) {
  if (!r) return "(no such row)";
  const bits = [`port ${r.port}`, r.state, `pid ${r.pid}`, `health ${JSON.stringify(r.health)}`];
  if (r.busy) bits.push(`busy: ${JSON.stringify(r.busyText)}`);
  if (r.note) bits.push(`note: ${JSON.stringify(r.note)}`);
  return bits.join(", ");
}

/**
 * Reads the page every POLL_MS until `check(snap)` returns true, or returns a
 * string (a failure to report at once), or `timeoutMs` passes (then fails with
 * `explain(snap)`). A refusal of the token always fails at once.
 */
async function waitFor(page, what, timeoutMs, check, explain, { refusalExpected = false } = {}) {
  const deadline = Date.now() + timeoutMs;
  let snap = null;
  for (;;) {
    try {
      snap = await snapshot(page);
    } catch (err) {
      fail(`${what}: could not read the page: ${err.message.split("\n")[0]}`);
    }
    if (snap.bannerKind === "auth" && !refusalExpected) fail(`${what}: the page was refused access: ${snap.banner}`);
    const verdict = check(snap);
    if (verdict === true) return snap;
    if (typeof verdict === "string") fail(`${what}: ${verdict}`);
    if (Date.now() >= deadline) fail(`${what}: not done within ${timeoutMs / 1000} s: ${explain(snap)}`);
    await sleep(POLL_MS);
  }
}

/**
 * Watches the answer to the POST the next click sends, so that a refused
 * action fails the check at once with the server's reason.
 */
function watchAction(page, name, verb, timeoutMs) {
  const suffix = `/api/services/${encodeURIComponent(name)}/${verb}`;
  const outcome = { done: false, status: null, error: null };
  page
    .waitForResponse((res) => res.request().method() === "POST" && new URL(res.url()).pathname === suffix, { timeout: timeoutMs })
    .then(async (res) => {
      outcome.status = res.status();
      const body = await res.text().catch(() => "");
      try {
        const data = JSON.parse(body);
        if (data?.ok !== true) outcome.error = data?.error ?? body;
      } catch {
        outcome.error = body.trim() || "(empty answer)";
      }
      if (outcome.status !== 200 && !outcome.error) outcome.error = `HTTP ${outcome.status}`;
      outcome.done = true;
    })
    .catch(() => {}); // no answer in time: the wait on the page reports it
  return outcome;
}

function actionFailure(outcome, what) {
  if (outcome.done && (outcome.status !== 200 || outcome.error)) {
    return `POST ${what} answered HTTP ${outcome.status}: ${outcome.error}`;
  }
  return null;
}

// A click or a fill that cannot happen (no such element, disabled) fails with its test id.
async function act(page, id, what, run) {
  try {
    await run(page.getByTestId(id));
  } catch (err) {
    fail(`could not ${what} (data-testid="${id}"): ${err.message.split("\n")[0]}`);
  }
}

const portsOf = (snap) => Object.fromEntries(snap.rows.map((r) => [r.name, Number(r.port)]));

async function open(page, url) {
  try {
    const res = await page.goto(url, { waitUntil: "domcontentloaded", timeout: 30_000 });
    if (res && !res.ok()) fail(`opening the page answered HTTP ${res.status()}: ${(await res.text()).slice(0, 200)}`);
  } catch (err) {
    if (err instanceof CheckError) throw err;
    fail(`could not open the dashboard: ${err.message.split("\n")[0]}`);
  }
}

async function checkActions(page, url, toRestart, toMove, newPort) {
  await open(page, url);

  // 1. Every service listed, with a port, running.
  const first = await waitFor(
    page,
    "waiting for every service to be listed as running",
    LOAD_TIMEOUT_MS,
    (s) => s.rows.length > 0 && s.rows.every((r) => isPort(r.port) && r.state === "running"),
    (s) =>
      s.rows.length === 0
        ? "the page lists no service (no data-testid=row-* rows)"
        : s.rows
            .filter((r) => !(isPort(r.port) && r.state === "running"))
            .map((r) => `${r.name}: ${describeRow(r)}`)
            .join("; "),
  );
  const names = first.rows.map((r) => r.name);
  for (const name of [toRestart, toMove]) {
    if (!names.includes(name)) fail(`the page lists no service "${name}" (it lists: ${names.join(", ")})`);
  }
  const services = portsOf(first);
  if (services[toMove] === newPort) fail(`${toMove} is already on port ${newPort}: choose another port to move it to`);
  const clash = Object.entries(services).find(([name, port]) => port === newPort && name !== toMove);
  if (clash) fail(`port ${newPort} is ${clash[0]}'s: choose a free port to move ${toMove} to`);

  const before = row(first, toRestart).pid;
  if (!isPid(before)) fail(`${toRestart} is running but its pid reads ${JSON.stringify(before)}`);

  // 2. Restart: a new pid, running and healthy again.
  const restartAnswer = watchAction(page, toRestart, "restart", RESTART_TIMEOUT_MS);
  await act(page, `restart-${toRestart}`, `click restart on ${toRestart}`, (b) => b.click({ timeout: 10_000 }));
  const restarted = await waitFor(
    page,
    `after clicking restart on ${toRestart}`,
    RESTART_TIMEOUT_MS,
    (s) => {
      const failure = actionFailure(restartAnswer, `/api/services/${toRestart}/restart`);
      if (failure) return failure;
      const r = row(s, toRestart);
      if (!r) return `the row of ${toRestart} disappeared`;
      return r.state === "running" && isPid(r.pid) && r.pid !== before && r.health === "healthy" && !r.busy;
    },
    (s) => {
      const r = row(s, toRestart);
      const why = r?.pid === before ? `its pid is still ${before}` : "it is not running, healthy and idle yet";
      return `${why} (${toRestart}: ${describeRow(r)}; the POST ${restartAnswer.done ? `answered HTTP ${restartAnswer.status}` : "had no answer yet"})`;
    },
  );
  const after = row(restarted, toRestart).pid;

  // 3. Move a service: the new port shown, running and healthy; then every
  // service (those that refer to it restart too) running again.
  const moveAnswer = watchAction(page, toMove, "port", MOVE_TIMEOUT_MS);
  await act(page, `port-input-${toMove}`, `type the new port of ${toMove}`, (i) => i.fill(String(newPort), { timeout: 10_000 }));
  await act(page, `port-set-${toMove}`, `click the button that sets ${toMove}'s port`, (b) => b.click({ timeout: 10_000 }));
  const moveDeadline = Date.now() + MOVE_TIMEOUT_MS;
  await waitFor(
    page,
    `after setting the port of ${toMove} to ${newPort}`,
    MOVE_TIMEOUT_MS,
    (s) => {
      const failure = actionFailure(moveAnswer, `/api/services/${toMove}/port`);
      if (failure) return failure;
      const r = row(s, toMove);
      if (!r) return `the row of ${toMove} disappeared`;
      return r.port === String(newPort) && r.state === "running" && r.health === "healthy" && !r.busy;
    },
    (s) => `${toMove}: ${describeRow(row(s, toMove))} (the POST ${moveAnswer.done ? `answered HTTP ${moveAnswer.status}` : "had no answer yet"})`,
  );
  const settled = await waitFor(
    page,
    `after moving ${toMove} to ${newPort}, waiting for every service to run again`,
    Math.max(5_000, moveDeadline - Date.now()),
    (s) => s.rows.every((r) => r.state === "running" && isPort(r.port) && !r.busy),
    (s) =>
      s.rows
        .filter((r) => !(r.state === "running" && isPort(r.port) && !r.busy))
        .map((r) => `${r.name}: ${describeRow(r)}`)
        .join("; "),
  );

  return {
    services,
    restarted: { service: toRestart, before: Number(before), after: Number(after) },
    moved: { service: toMove, port: newPort },
    after: portsOf(settled),
  };
}

async function checkRefusal(page, url) {
  const bare = new URL(url);
  bare.searchParams.delete("token");
  await open(page, bare.toString());

  // The page explains the refusal, and shows no service.
  const shown = await waitFor(
    page,
    "opening the page without a token",
    REFUSAL_TIMEOUT_MS,
    (s) => s.banner !== null && /token/i.test(s.banner),
    (s) => (s.banner === null ? "no error banner (data-testid=error) appeared" : `the banner does not mention the token: ${JSON.stringify(s.banner)}`),
    { refusalExpected: true },
  );
  if (!/cargo xtask/.test(shown.banner)) fail(`the banner does not say where the address comes from (cargo xtask): ${JSON.stringify(shown.banner)}`);
  if (shown.rows.length > 0) fail(`the page lists services without a token: ${shown.rows.map((r) => r.name).join(", ")}`);
  const stateCall = requests.find((r) => r.method === "GET" && new URL(r.url).pathname === "/api/state");
  if (!stateCall) fail("the page never asked GET /api/state");
  if (stateCall.outcome !== "HTTP 403") fail(`GET /api/state without a token answered ${stateCall.outcome}, not HTTP 403`);

  // The API refuses an action without a token and with a wrong one. (The
  // same-origin referrer policy makes the POST carry the page's own Origin,
  // so the refusal tested is the token's, not the cross-site check's.)
  const answers = await page.evaluate(async () => {
    const ask = async (method, path, token) => {
      const headers = token === undefined ? {} : { "X-Token": token };
      const res = await fetch(path, { method, headers, cache: "no-store", referrerPolicy: "same-origin" });
      return { method, path, token: token === undefined ? "(none)" : "(wrong)", status: res.status, body: await res.text() };
    };
    return [
      await ask("POST", "/api/services/x/restart"),
      await ask("POST", "/api/services/x/restart", "0123456789abcdef0123456789abcdef"),
      await ask("GET", "/api/state", "wrong"),
    ];
  });
  for (const a of answers) {
    const what = `${a.method} ${a.path} with token ${a.token}`;
    if (a.status !== 403) fail(`${what} answered HTTP ${a.status}, not 403: ${a.body.slice(0, 200)}`);
    let data = null;
    try {
      data = JSON.parse(a.body);
    } catch {
      /* reported below */
    }
    if (data?.ok !== false || typeof data?.error !== "string") {
      fail(`${what} answered 403 but not with {"ok": false, "error": ...}: ${a.body.slice(0, 200)}`);
    }
  }
  return { refused: true };
}

async function report(message, url, page) {
  const lines = [`dashboard check FAILED: ${redact(message)}`, `  page: ${redact(url)}`];
  if (page) {
    const snap = await page.evaluate(readPage).catch(() => null);
    if (snap) {
      lines.push(`  error banner: ${snap.banner === null ? "(none)" : snap.banner}`);
      lastRows = snap.rows;
    }
  }
  if (lastRows) {
    lines.push("  rows as last seen:");
    if (lastRows.length === 0) lines.push("    (none)");
    for (const r of lastRows) lines.push(`    ${r.name}: ${describeRow(r)}`);
  }
  const bad = requests.filter((r) => !/^HTTP [23]\d\d$/.test(r.outcome));
  lines.push("  failed requests:");
  if (bad.length === 0) lines.push("    (none)");
  for (const r of bad) lines.push(`    ${r.method} ${redact(r.url)} -> ${r.outcome}`);
  lines.push("  browser console errors:");
  if (consoleErrors.length === 0) lines.push("    (none)");
  for (const e of consoleErrors) lines.push(`    ${redact(e)}`);
  if (page) {
    const shot = path.join(tmpdir(), `dashboard-check-failure-${process.pid}.png`);
    const saved = await page.screenshot({ path: shot, fullPage: true, timeout: 10_000 }).then(
      () => true,
      () => false,
    );
    if (saved) lines.push(`  screenshot: ${shot}`);
  }
  process.stderr.write(lines.join("\n") + "\n");
}

function parseArgs(argv) {
  if (argv[0] === "--no-token") {
    if (argv.length !== 2) return null;
    return { mode: "refusal", url: argv[1] };
  }
  if (argv.length !== 4) return null;
  const [url, toRestart, toMove, portText] = argv;
  const newPort = Number(portText);
  if (!/^\d+$/.test(portText) || newPort < 1 || newPort > 65535) {
    process.stderr.write(`dashboard check: <new-port> must be a port number, not ${JSON.stringify(portText)}\n`);
    return null;
  }
  if (!/[?&]token=[^&]/.test(url)) {
    process.stderr.write("dashboard check: the URL has no ?token=: pass the address cargo xtask printed\n");
    return null;
  }
  return { mode: "actions", url, toRestart, toMove, newPort };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!args) {
    process.stderr.write(USAGE);
    return 1;
  }
  try {
    new URL(args.url);
  } catch {
    process.stderr.write(`dashboard check: not a URL: ${redact(args.url)}\n${USAGE}`);
    return 1;
  }

  let browser;
  let page = null;
  try {
    browser = await launch();
    page = browser.page;
    watch(page, consoleErrors, requests);
    const result =
      args.mode === "refusal"
        ? await checkRefusal(page, args.url)
        : await checkActions(page, args.url, args.toRestart, args.toMove, args.newPort);
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  } catch (err) {
    await report(err instanceof CheckError ? err.message : (err?.stack ?? String(err)), args.url, page);
    return 1;
  } finally {
    await browser?.close().catch(() => {});
  }
}

process.exitCode = await main();
