// Drives headless Debian chromium through the web chat widget for tests/webchat_browser.rs.
// The Rust test plays the helpdesk and restarts the daemon; the two talk in lines:
// this script prints "STEP <name> <json>" on stdout and waits for commands on stdin.
//
// env: WEBCHAT_URL (demo page), CHROMIUM (executable), SCREENSHOT_DIR.
import { join } from "node:path";
import { WAIT, command, step, withChromium } from "./harness.mjs";

const url = process.env.WEBCHAT_URL;
const shots = process.env.SCREENSHOT_DIR;

await withChromium("sbwc-chromium-", { viewport: { width: 1100, height: 760 }, locale: "zh-CN" }, async (context) => {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => { if (m.type() === "error") process.stderr.write(`console: ${m.text()}\n`); });
  await page.goto(url);
  const state = (s) => page.waitForSelector(`.sbwc-root[data-state="${s}"]`, { timeout: WAIT });

  // Open with the keyboard: the launcher is a real button.
  await page.waitForSelector(".sbwc-launcher", { timeout: WAIT });
  await page.focus(".sbwc-launcher");
  await page.keyboard.press("Enter");
  await page.waitForSelector(".sbwc-panel:not([hidden])", { timeout: WAIT });
  await state("online");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.className);
  if (!String(focused).includes("sbwc-input")) throw new Error(`focus went to ${focused}, not the input`);

  const sentCount = () => page.$$eval(".sbwc-me .sbwc-meta", (els) => els.filter((e) => e.textContent.includes("已送达")).length);
  async function waitSent(n) {
    await page.waitForFunction((n) => [...document.querySelectorAll(".sbwc-me .sbwc-meta")].filter((e) => e.textContent.includes("已送达")).length >= n, n, { timeout: WAIT });
  }
  async function waitAgents(n) {
    await page.waitForFunction((n) => document.querySelectorAll(".sbwc-msg.sbwc-agent:not(.sbwc-welcome)").length >= n, n, { timeout: WAIT });
  }

  await page.keyboard.type("你好，我的包裹破损了 my parcel is damaged 📦");
  await page.keyboard.press("Enter");
  await waitSent(1);
  step("sent1");

  await command("replied1");
  await waitAgents(1);
  step("got1", { agent: await page.textContent(".sbwc-agent:not(.sbwc-welcome) .sbwc-who") });

  // The daemon goes away mid-conversation: the widget says so and keeps what is typed.
  await command("stopped");
  await page.waitForFunction(() => document.querySelector(".sbwc-root").getAttribute("data-state") !== "online", null, { timeout: WAIT });
  await page.keyboard.type("还在吗？ still there?");
  await page.keyboard.press("Enter");
  step("queued", { state: await page.getAttribute(".sbwc-root", "data-state"), sent: await sentCount() });

  await command("restarted");
  await state("online");
  await waitSent(2);
  step("sent2");

  await command("replied2");
  await waitAgents(2);
  const mine = await page.$$eval(".sbwc-me .sbwc-bubble", (els) => els.map((e) => e.textContent));
  const agents = await page.$$eval(".sbwc-agent:not(.sbwc-welcome) .sbwc-bubble", (els) => els.map((e) => e.textContent));
  const badge = await page.isHidden(".sbwc-badge");
  await page.screenshot({ path: join(shots, "webchat-widget.png") });

  // The same conversation on a phone-sized screen, after a reload (from localStorage).
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(url);
  await phone.click(".sbwc-launcher");
  await phone.waitForSelector('.sbwc-root[data-state="online"]', { timeout: WAIT });
  await phone.waitForFunction(() => document.querySelectorAll(".sbwc-msg.sbwc-agent:not(.sbwc-welcome)").length >= 2, null, { timeout: WAIT });
  const phoneBox = await phone.$eval(".sbwc-panel", (p) => { const r = p.getBoundingClientRect(); return [r.width, r.height]; });
  const phoneMine = await phone.$$eval(".sbwc-me .sbwc-bubble", (els) => els.length);
  await phone.screenshot({ path: join(shots, "webchat-widget-phone.png") });
  step("done", { mine, agents, badgeHidden: badge, phoneBox, phoneMine });
});
