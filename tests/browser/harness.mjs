// What the browser scripts share: the line protocol with the Rust test that runs them (they
// print "STEP <name> <json>" on stdout and wait for commands on stdin) and a headless Debian
// chromium in a throwaway profile that is removed however the script ends.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

export const WAIT = 30000;

const commands = [];
const waiters = [];
createInterface({ input: process.stdin }).on("line", (line) => {
  const waiter = waiters.shift();
  if (waiter) waiter(line.trim()); else commands.push(line.trim());
});

/** Resolves when the test sends `expected`; anything else fails the script. */
export function command(expected) {
  return new Promise((resolve, reject) => {
    const check = (line) => (line === expected ? resolve() : reject(new Error(`expected ${expected}, got ${line}`)));
    if (commands.length) check(commands.shift()); else waiters.push(check);
  });
}

/** Tells the test how far the script got. */
export function step(name, data = {}) {
  process.stdout.write(`STEP ${name} ${JSON.stringify(data)}\n`);
}

/** Runs `body(context)` in chromium (`CHROMIUM`, default /usr/bin/chromium) with `options`
 *  (viewport, locale); a failure becomes a "failed" step and a non-zero exit. */
export async function withChromium(profilePrefix, options, body) {
  const userDataDir = mkdtempSync(join(tmpdir(), profilePrefix));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
      ...options,
    });
    await body(context);
  } catch (err) {
    step("failed", { error: String((err && err.stack) || err) });
    process.exitCode = 1;
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
    process.exit();
  }
}
