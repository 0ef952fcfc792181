// Drives headless Debian chromium through the operator console for tests/console_browser.rs:
// the console in one tab, the web chat demo page in another. The Rust test starts the daemon
// and plays the broken helpdesk; this script prints "STEP <name> <json>" and waits for
// commands on stdin.
//
// env: CONSOLE_URL, WEBCHAT_URL, WEBCHAT2_URL (the second site's demo page), CLAIMS_QUEUE,
// SCREENSHOT (path of the console screenshot), CHROMIUM.
import { WAIT, command, step, withChromium } from "./harness.mjs";

const consoleUrl = process.env.CONSOLE_URL;
const webchatUrl = process.env.WEBCHAT_URL;
const webchat2Url = process.env.WEBCHAT2_URL;
const claims = process.env.CLAIMS_QUEUE;
const screenshot = process.env.SCREENSHOT;

await withChromium("sbconsole-chromium-", { viewport: { width: 1280, height: 900 }, locale: "zh-CN" }, async (context) => {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => { if (m.type() === "error") process.stderr.write(`console: ${m.text()}\n`); });
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(consoleUrl);

  // Links and queues (the management API answers for unacked counts).
  await page.waitForSelector('#connectors tr[data-path="/webchat/site"]', { timeout: WAIT });
  await page.waitForSelector(`#queue-rows tr[data-queue="${claims}"]:not([data-unacked=""])`, { timeout: WAIT });
  await page.waitForSelector("#broker-state.up", { timeout: WAIT });
  await page.waitForSelector('#tail-rows[data-ready="true"]', { timeout: WAIT });
  const connectors = await page.$$eval("#connectors tr", (rows) => rows.map((r) => r.dataset.path));
  const queues = await page.$$eval("#queue-rows tr", (rows) => rows.map((r) => r.dataset.queue));
  step("console", { connectors, queues });

  // Try it: listen as the claims helpdesk.
  await page.selectOption("#try-queue", claims);
  await page.click("#try-start");
  await page.waitForSelector('#try-rows[data-ready="true"]', { timeout: WAIT });
  step("listening");

  // A visitor writes from the web chat demo page in another tab.
  const visitor = await context.newPage();
  await visitor.goto(webchatUrl);
  await visitor.click(".sbwc-launcher");
  await visitor.waitForSelector('.sbwc-root[data-state="online"]', { timeout: WAIT });
  await visitor.fill(".sbwc-input", "我的包裹破损了 my parcel is damaged, call 138 0013 8000");
  await visitor.press(".sbwc-input", "Enter");
  await visitor.waitForFunction(() => [...document.querySelectorAll(".sbwc-me .sbwc-meta")].some((e) => e.textContent.includes("已送达") || e.textContent.toLowerCase().includes("delivered")), null, { timeout: WAIT });
  step("sent");

  // The live tail shows it with its route; clicking shows the explanation.
  await page.bringToFront();
  const tailRow = await page.waitForSelector('#tail-rows li[data-channel="webchat"]', { timeout: WAIT });
  await tailRow.click();
  await page.waitForSelector("#tail-detail .explanation", { timeout: WAIT });
  const explanation = await page.textContent("#tail-detail .explanation");
  const route = await tailRow.$eval(".route", (e) => e.textContent);
  const conversation = await tailRow.evaluate((e) => e.dataset.conversation);
  const rowText = await tailRow.textContent();
  step("tailed", { route, explanation, conversation, rowText });

  // Reply from Try it; the visitor sees it.
  const tryRow = await page.waitForSelector('#try-rows li[data-channel="webchat"]', { timeout: WAIT });
  await tryRow.click();
  await page.fill("#reply-text", "您好，我们会为您补发。 We will send a new one.");
  await page.click("#reply-send");
  await page.waitForSelector("#reply-to[data-sent]", { timeout: WAIT });
  await visitor.waitForFunction(() => document.querySelectorAll(".sbwc-msg.sbwc-agent:not(.sbwc-welcome)").length >= 1, null, { timeout: WAIT });
  const got = await visitor.textContent(".sbwc-agent:not(.sbwc-welcome) .sbwc-bubble");
  step("delivered", { text: got });

  // Statistics and rates have something to show now; the screenshot is for docs/.
  await page.waitForFunction(() => [...document.querySelectorAll('#stats-tables [data-dimension="channel"] tr[data-value="webchat"] td')].some((td, i) => i === 1 && td.textContent !== "0"), null, { timeout: WAIT });
  await page.waitForSelector(`#queue-rows tr[data-queue="${claims}"] svg rect`, { timeout: WAIT });
  // The message waits in the claims queue (Try it listened on a copy): its age shows.
  await page.waitForSelector(`#queue-rows tr[data-queue="${claims}"]:not([data-oldest=""])`, { timeout: WAIT });
  await page.screenshot({ path: screenshot, fullPage: true });
  step("screenshot");

  // A malformed reply (published by the test) lands in the dead letters; fix it and replay.
  await command("dead");
  await page.click("#dead-refresh");
  const deadRow = await page.waitForSelector('#dead-rows li[data-reason="malformed_reply"]', { timeout: WAIT });
  await deadRow.click();
  await page.waitForSelector("#dead-detail:not([hidden])", { timeout: WAIT });
  const body = JSON.parse(await page.inputValue("#dead-body"));
  body.content = { type: "text", text: "补发已安排 Fixed and replayed." };
  await page.fill("#dead-body", JSON.stringify(body));
  await page.click("#dead-replay");
  await page.waitForSelector("#dead-count[data-replayed]", { timeout: WAIT });
  await visitor.waitForFunction(() => document.querySelectorAll(".sbwc-msg.sbwc-agent:not(.sbwc-welcome)").length >= 2, null, { timeout: WAIT });
  const agents = await visitor.$$eval(".sbwc-agent:not(.sbwc-welcome) .sbwc-bubble", (els) => els.map((e) => e.textContent));
  const left = await page.$$eval("#dead-rows li", (rows) => rows.length);
  const oldest = await page.$eval(`#queue-rows tr[data-queue="${claims}"]`, (row) => ({ unacked: row.dataset.unacked, oldest: row.dataset.oldest }));
  step("replayed", { agents, left, queue: oldest });

  // A visitor of the second site. The test then takes that site out of the config (an
  // operator's mistake), so the helpdesk's reply to this visitor is dead-lettered as
  // unknown_connector.
  await command("visit2");
  const second = await context.newPage();
  await second.goto(webchat2Url);
  await second.click(".sbwc-launcher");
  await second.waitForSelector('.sbwc-root[data-state="online"]', { timeout: WAIT });
  const secondVisitor = await second.evaluate(() => {
    const key = Object.keys(localStorage).find((k) => k.endsWith("/webchat/site2/:visitor"));
    return key ? JSON.parse(localStorage.getItem(key)) : null;
  });
  await second.close();
  step("visitor2", { visitor: secondVisitor });

  // The test has put the site back: replay the dead letter unchanged; the visitor, back on
  // the page, gets the reply.
  await command("replay2");
  await page.bringToFront();
  await page.click("#dead-refresh");
  const missingRow = await page.waitForSelector('#dead-rows li[data-reason="unknown_connector"]', { timeout: WAIT });
  const missingId = await missingRow.evaluate((e) => e.dataset.id);
  await missingRow.click();
  await page.waitForSelector("#dead-detail:not([hidden])", { timeout: WAIT });
  const unchanged = await page.inputValue("#dead-body");
  await page.click("#dead-replay");
  await page.waitForSelector(`#dead-count[data-replayed="${missingId}"]`, { timeout: WAIT });
  const back = await context.newPage();
  await back.goto(webchat2Url);
  await back.click(".sbwc-launcher");
  await back.waitForFunction(() => document.querySelectorAll(".sbwc-msg.sbwc-agent:not(.sbwc-welcome)").length >= 1, null, { timeout: WAIT });
  const text = await back.textContent(".sbwc-agent:not(.sbwc-welcome) .sbwc-bubble");
  const remaining = await page.$$eval("#dead-rows li", (rows) => rows.length);
  step("redelivered", { text, body: unchanged, left: remaining });
});
