// Browser checks of the named URLs: cookies kept apart by name, and the
// proxy's own pages.
//
//   node e2e/names.mjs cookies <frontend-url> <other-url> <frontend-numeric-url> <other-numeric-url>
//
// On <frontend-url> (a page of one checkout) sets a host-only cookie from the
// page's script, then opens <other-url> (a service of another checkout that
// answers with the Cookie header it got, and sets a cookie of its own), then
// the frontend again. Does the same with the numeric URLs (one host, two
// ports), where browsers do share cookies. Prints one line of JSON:
//   {"named": {"otherGot", "frontendHas"}, "numeric": {"otherGot", "frontendHas"}}
//
//   node e2e/names.mjs pages <url>...
//
// Opens each URL and prints [{"url", "status", "title", "text"}], one line.
//
// Both exit 0 once done (the caller judges what was seen); on a failure to
// look, print what went wrong to stderr and exit 1.
import { launch } from "./lib.mjs";

const TIMEOUT_MS = 60_000;

// Sets `name` from the page's script; returns what the next request to
// `other` sends, and the frontend's cookies after.
async function cookies(page, frontend, other, name) {
  await page.goto(frontend, { waitUntil: "domcontentloaded", timeout: TIMEOUT_MS });
  await page.evaluate((cookie) => {
    document.cookie = `${cookie}=set-here; path=/`;
  }, name);
  const answer = await page.goto(other, { waitUntil: "domcontentloaded", timeout: TIMEOUT_MS });
  const otherGot = (await answer.text()).replace(/^cookie: /, "");
  await page.goto(frontend, { waitUntil: "domcontentloaded", timeout: TIMEOUT_MS });
  const frontendHas = await page.evaluate(() => document.cookie);
  return { otherGot, frontendHas };
}

async function pages(page, urls) {
  const seen = [];
  for (const url of urls) {
    const answer = await page.goto(url, { waitUntil: "domcontentloaded", timeout: TIMEOUT_MS });
    const text = await page.evaluate(() => document.body?.innerText ?? "");
    seen.push({ url, status: answer?.status() ?? null, title: await page.title(), text });
  }
  return seen;
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  const usage = mode === "cookies" ? args.length !== 4 : mode === "pages" ? args.length === 0 : true;
  if (usage) {
    process.stderr.write(
      "usage: node e2e/names.mjs cookies <frontend-url> <other-url> <frontend-numeric-url> <other-numeric-url>\n" +
        "       node e2e/names.mjs pages <url>...\n",
    );
    return 1;
  }
  let browser;
  try {
    browser = await launch();
    const { page } = browser;
    let result;
    if (mode === "cookies") {
      const [frontend, other, frontendNumeric, otherNumeric] = args;
      result = {
        named: await cookies(page, frontend, other, "named_frontend"),
        numeric: await cookies(page, frontendNumeric, otherNumeric, "numeric_frontend"),
      };
    } else {
      result = await pages(page, args);
    }
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  } catch (err) {
    process.stderr.write(`names check FAILED: ${err?.stack ?? err}\n`);
    return 1;
  } finally {
    await browser?.close().catch(() => {});
  }
}

process.exitCode = await main();
