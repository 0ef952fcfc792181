/*
 * Switchboard web chat widget. One tag adds a chat button and panel to any page:
 *
 *   <script src="https://chat.example.com/webchat/site/widget.js" async
 *           data-lang="zh" data-title="在线客服" data-token="<site token>"></script>
 *
 * Plain JavaScript, no framework. Speaks protocol version 1 (see the connector's README):
 * every visitor message has a client id and stays in a local outbox (localStorage) until the
 * server acks it, so a dropped link or a page reload loses nothing; agent messages carry a
 * sequence number, and on reconnect the widget resumes from the last one it showed.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__switchboardChat) return;
  var base = script.src.replace(/[^/]*(\?.*)?$/, "");
  var data = script.dataset || {};
  var storeKey = "sbwc:" + base;

  var STRINGS = {
    en: {
      open: "Chat with us", close: "Close chat", title: "Customer service",
      placeholder: "Type a message…", send: "Send", image: "Send a picture", emoji: "Emoji",
      connecting: "Connecting…", online: "Online", reconnecting: "Reconnecting…",
      offline: "Offline — messages will be sent when the connection is back",
      unavailable: "Chat is unavailable", sending: "Sending…", sent: "Sent", failed: "Not sent",
      typing: "is typing…", agent: "Agent", you: "You", unread: "unread messages",
      tooBig: "The picture is too large", notImage: "Only PNG, JPEG, GIF or WebP pictures",
      uploadFailed: "The picture could not be sent", welcome: "Hello! How can we help?"
    },
    zh: {
      open: "在线咨询", close: "关闭对话", title: "在线客服",
      placeholder: "请输入消息…", send: "发送", image: "发送图片", emoji: "表情",
      connecting: "正在连接…", online: "在线", reconnecting: "正在重新连接…",
      offline: "网络已断开，恢复后将自动发送", unavailable: "暂时无法使用在线客服",
      sending: "发送中…", sent: "已送达", failed: "发送失败", typing: "正在输入…",
      agent: "客服", you: "我", unread: "条未读消息", tooBig: "图片太大",
      notImage: "仅支持 PNG、JPEG、GIF 或 WebP 图片", uploadFailed: "图片发送失败",
      welcome: "您好！请问有什么可以帮您？"
    }
  };
  function pickLang() {
    var wanted = [data.lang, document.documentElement.lang]
      .concat(navigator.languages || [navigator.language]);
    for (var i = 0; i < wanted.length; i++) {
      var l = (wanted[i] || "").toLowerCase();
      if (l.indexOf("zh") === 0) return "zh";
      if (l.indexOf("en") === 0) return "en";
    }
    return "en";
  }
  var lang = pickLang();
  var t = STRINGS[lang];
  var EMOJI = ["😀", "😂", "😊", "😍", "👍", "👎", "🙏", "👏", "🎉", "😢", "😡", "❤️", "📦", "🚚", "✅", "❓"];

  // ---- persistent state -------------------------------------------------------------
  function load(name, fallback) {
    try {
      var v = localStorage.getItem(storeKey + ":" + name);
      return v === null ? fallback : JSON.parse(v);
    } catch (e) { return fallback; }
  }
  function save(name, value) {
    try { localStorage.setItem(storeKey + ":" + name, JSON.stringify(value)); } catch (e) { /* full or blocked */ }
  }
  var state = {
    visitor: load("visitor", null),
    epoch: load("epoch", null),
    lastSeq: load("lastSeq", 0),
    outbox: load("outbox", []),
    log: load("log", []),
    unread: load("unread", 0),
    token: data.token || null,
    maxImage: 0
  };
  var MAX_LOG = 200;

  // ---- DOM ------------------------------------------------------------------------
  var css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = base + "__SWITCHBOARD_WIDGET_CSS__";
  document.head.appendChild(css);

  function el(tag, cls, attrs) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }
  var root = el("div", "sbwc-root", { lang: lang === "zh" ? "zh-CN" : "en" });
  var launcher = el("button", "sbwc-launcher", { type: "button", "aria-haspopup": "dialog", "aria-expanded": "false", "aria-label": t.open });
  launcher.innerHTML = '<svg viewBox="0 0 24 24" width="28" height="28" aria-hidden="true"><path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z"/></svg>';
  var badge = el("span", "sbwc-badge", { "aria-live": "polite" });
  launcher.appendChild(badge);

  var panel = el("section", "sbwc-panel", { role: "dialog", "aria-modal": "false", "aria-labelledby": "sbwc-title", hidden: "" });
  var header = el("header", "sbwc-header");
  var titleBox = el("div", "sbwc-titlebox");
  var title = el("h2", "sbwc-title", { id: "sbwc-title" });
  title.textContent = data.title || t.title;
  var status = el("p", "sbwc-state", { role: "status", "aria-live": "polite" });
  titleBox.appendChild(title);
  titleBox.appendChild(status);
  var closeBtn = el("button", "sbwc-close", { type: "button", "aria-label": t.close });
  closeBtn.textContent = "×";
  header.appendChild(titleBox);
  header.appendChild(closeBtn);

  var list = el("ol", "sbwc-log", { role: "log", "aria-live": "polite", "aria-relevant": "additions", tabindex: "0" });
  var typing = el("p", "sbwc-typing", { "aria-live": "polite", hidden: "" });
  var notice = el("p", "sbwc-notice", { role: "alert", hidden: "" });

  var form = el("form", "sbwc-form");
  var input = el("textarea", "sbwc-input", { rows: "1", placeholder: t.placeholder, "aria-label": t.placeholder, maxlength: "4000" });
  var emojiBtn = el("button", "sbwc-tool sbwc-emoji-btn", { type: "button", "aria-label": t.emoji, "aria-expanded": "false" });
  emojiBtn.textContent = "😊";
  var imageBtn = el("button", "sbwc-tool sbwc-image-btn", { type: "button", "aria-label": t.image, hidden: "" });
  imageBtn.innerHTML = '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true"><path fill="currentColor" d="M21 19V5a2 2 0 0 0-2-2H5a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2zM8.5 13.5l2.5 3 3.5-4.5 4.5 6H5l3.5-4.5z"/></svg>';
  var fileInput = el("input", "sbwc-file", { type: "file", accept: "image/png,image/jpeg,image/gif,image/webp", tabindex: "-1", "aria-hidden": "true" });
  var sendBtn = el("button", "sbwc-send", { type: "submit" });
  sendBtn.textContent = t.send;
  var emojiGrid = el("div", "sbwc-emoji", { role: "group", "aria-label": t.emoji, hidden: "" });
  EMOJI.forEach(function (e) {
    var b = el("button", "sbwc-emoji-item", { type: "button", "aria-label": e });
    b.textContent = e;
    b.addEventListener("click", function () { insertText(e); toggleEmoji(false); input.focus(); });
    emojiGrid.appendChild(b);
  });
  form.appendChild(emojiBtn);
  form.appendChild(imageBtn);
  form.appendChild(input);
  form.appendChild(sendBtn);
  form.appendChild(fileInput);

  panel.appendChild(header);
  panel.appendChild(list);
  panel.appendChild(typing);
  panel.appendChild(notice);
  panel.appendChild(emojiGrid);
  panel.appendChild(form);
  root.appendChild(panel);
  root.appendChild(launcher);

  function mount() { document.body.appendChild(root); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  // ---- rendering ------------------------------------------------------------------
  function timeText(at) {
    var d = at ? new Date(at) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString(lang === "zh" ? "zh-CN" : "en", { hour: "2-digit", minute: "2-digit" });
  }
  function safeUrl(u) {
    if (!u) return null;
    try {
      var url = new URL(u, base);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) { return null; }
  }
  function renderContent(box, content) {
    content = content || {};
    if (content.type === "image") {
      var src = safeUrl(content.url || (content.media_id ? base + "media/" + content.media_id : null));
      if (src) {
        var img = el("img", "sbwc-img", { src: src, alt: content.caption || t.image, loading: "lazy" });
        box.appendChild(img);
      }
      if (content.caption) box.appendChild(document.createTextNode(content.caption));
    } else if (content.type === "link" || content.type === "file") {
      var href = safeUrl(content.url);
      var a = el("a", "sbwc-link", { href: href || "#", target: "_blank", rel: "noopener noreferrer" });
      a.textContent = content.title || content.name || content.url || "";
      box.appendChild(a);
      if (content.description) box.appendChild(document.createTextNode(" " + content.description));
    } else if (content.type === "text") {
      box.textContent = content.text || "";
    } else {
      box.textContent = "[" + (content.type || "?") + "]";
    }
  }
  function itemFor(entry) {
    var li = el("li", "sbwc-msg " + (entry.kind === "agent" ? "sbwc-agent" : "sbwc-me"), { "data-id": entry.id });
    var who = el("span", "sbwc-who");
    who.textContent = entry.kind === "agent" ? (entry.agent || t.agent) : t.you;
    var bubble = el("div", "sbwc-bubble");
    renderContent(bubble, entry.content);
    var meta = el("span", "sbwc-meta");
    meta.textContent = timeText(entry.at) + (entry.kind === "me" ? " · " + (t[entry.status] || "") : "");
    li.appendChild(who);
    li.appendChild(bubble);
    li.appendChild(meta);
    if (entry.status === "failed") li.classList.add("sbwc-failed");
    return li;
  }
  function renderAll() {
    list.textContent = "";
    if (state.log.length === 0) {
      var hello = el("li", "sbwc-msg sbwc-agent sbwc-welcome");
      var b = el("div", "sbwc-bubble");
      b.textContent = t.welcome;
      hello.appendChild(b);
      list.appendChild(hello);
    }
    state.log.forEach(function (entry) { list.appendChild(itemFor(entry)); });
    list.scrollTop = list.scrollHeight;
  }
  function rerender(entry) {
    var old = list.querySelector('[data-id="' + CSS.escape(entry.id) + '"]');
    var fresh = itemFor(entry);
    if (old) old.replaceWith(fresh); else {
      var welcome = list.querySelector(".sbwc-welcome");
      if (welcome) welcome.remove();
      list.appendChild(fresh);
    }
    list.scrollTop = list.scrollHeight;
  }
  function addToLog(entry) {
    state.log.push(entry);
    if (state.log.length > MAX_LOG) state.log.splice(0, state.log.length - MAX_LOG);
    save("log", state.log);
    rerender(entry);
  }
  function findLog(id) {
    for (var i = state.log.length - 1; i >= 0; i--) if (state.log[i].id === id) return state.log[i];
    return null;
  }
  function showBadge() {
    badge.textContent = state.unread > 0 ? String(state.unread > 99 ? "99+" : state.unread) : "";
    badge.hidden = state.unread === 0;
    launcher.setAttribute("aria-label", t.open + (state.unread ? " (" + state.unread + " " + t.unread + ")" : ""));
  }
  function setStatus(kind) {
    status.textContent = t[kind];
    status.setAttribute("data-state", kind);
    root.setAttribute("data-state", kind);
  }
  function setNotice(text) {
    notice.textContent = text || "";
    notice.hidden = !text;
  }

  // ---- opening and closing ---------------------------------------------------------
  var isOpen = false;
  function open() {
    isOpen = true;
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    root.classList.add("sbwc-open");
    state.unread = 0;
    save("unread", 0);
    showBadge();
    list.scrollTop = list.scrollHeight;
    markRead();
    input.focus();
  }
  function close() {
    isOpen = false;
    panel.hidden = true;
    toggleEmoji(false);
    launcher.setAttribute("aria-expanded", "false");
    root.classList.remove("sbwc-open");
    launcher.focus();
  }
  function toggleEmoji(show) {
    emojiGrid.hidden = !show;
    emojiBtn.setAttribute("aria-expanded", show ? "true" : "false");
  }
  launcher.addEventListener("click", function () { isOpen ? close() : open(); });
  closeBtn.addEventListener("click", close);
  panel.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { e.preventDefault(); close(); }
  });
  emojiBtn.addEventListener("click", function () { toggleEmoji(emojiGrid.hidden); });
  function insertText(text) {
    var s = input.selectionStart || input.value.length, e = input.selectionEnd || s;
    input.value = input.value.slice(0, s) + text + input.value.slice(e);
    input.selectionStart = input.selectionEnd = s + text.length;
  }

  // ---- the socket --------------------------------------------------------------------
  var ws = null, ready = false, attempt = 0, retryTimer = null, pingTimer = null, lastHeard = 0, stopped = false;
  var pingMs = 25000;

  function socketUrl() {
    var u = base.replace(/^http/, "ws") + "ws?v=1";
    if (state.token) u += "&token=" + encodeURIComponent(state.token);
    else if (state.visitor) u += "&visitor=" + encodeURIComponent(state.visitor);
    return u;
  }
  function send(frame) {
    if (ws && ready && ws.readyState === 1) { ws.send(JSON.stringify(frame)); return true; }
    return false;
  }
  function connect() {
    if (stopped) return;
    clearTimeout(retryTimer);
    ready = false;
    setStatus(attempt === 0 ? "connecting" : "reconnecting");
    try { ws = new WebSocket(socketUrl()); } catch (e) { scheduleReconnect(); return; }
    var mine = ws;
    ws.onopen = function () {
      lastHeard = Date.now();
      mine.send(JSON.stringify({ type: "hello", v: 1, last_seq: state.lastSeq || 0, epoch: state.epoch || undefined }));
    };
    ws.onmessage = function (ev) {
      lastHeard = Date.now();
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      onFrame(f);
    };
    ws.onclose = function (ev) {
      if (mine !== ws) return;
      ready = false;
      clearInterval(pingTimer);
      if (ev.code === 4003 || ev.code === 4000) {
        if (lastError === "bad_visitor") {
          // The chat no longer knows this id (its secret changed): start as a new visitor.
          state.visitor = null; save("visitor", null);
          scheduleReconnect();
          return;
        }
        stopped = true;
        setStatus("unavailable");
        return;
      }
      scheduleReconnect();
    };
    ws.onerror = function () { /* onclose follows */ };
  }
  function scheduleReconnect() {
    if (stopped) return;
    setStatus(navigator.onLine === false ? "offline" : "reconnecting");
    attempt++;
    // Jittered exponential backoff: 0.5 s doubling to 15 s, each wait between half and all
    // of its step, so a restarted server is not hit by every widget at once.
    var step = Math.min(15000, 500 * Math.pow(2, Math.min(attempt - 1, 5)));
    var wait = step / 2 + Math.random() * step / 2;
    retryTimer = setTimeout(connect, wait);
  }
  function reconnectNow() {
    if (stopped || (ws && (ws.readyState === 0 || (ws.readyState === 1 && ready)))) return;
    attempt = 0;
    connect();
  }
  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { reconnectNow(); markRead(); }
  });

  var lastError = null;
  function onFrame(f) {
    switch (f.type) {
      case "ready":
        ready = true;
        attempt = 0;
        lastError = null;
        state.visitor = f.visitor; save("visitor", f.visitor);
        state.maxImage = f.max_image_bytes || 0;
        imageBtn.hidden = !state.maxImage;
        if (f.max_text_chars) input.setAttribute("maxlength", String(f.max_text_chars));
        if (f.reset) { state.lastSeq = 0; state.epoch = null; }
        if (f.epoch) { state.epoch = f.epoch; }
        save("epoch", state.epoch); save("lastSeq", state.lastSeq);
        pingMs = f.ping_interval_ms || pingMs;
        clearInterval(pingTimer);
        pingTimer = setInterval(function () {
          // No frame for two ping periods: the link is dead even if the socket says open.
          if (Date.now() - lastHeard > 2 * pingMs + 5000) { try { ws.close(); } catch (e) {} return; }
          send({ type: "ping" });
        }, pingMs);
        setStatus("online");
        setNotice("");
        flushOutbox();
        markRead();
        break;
      case "agent": {
        // A new epoch means the numbering started over; reply ids still catch repeats.
        if (f.epoch && f.epoch !== state.epoch) { state.epoch = f.epoch; state.lastSeq = 0; }
        if (f.seq <= state.lastSeq) break;
        state.lastSeq = f.seq;
        save("epoch", state.epoch); save("lastSeq", state.lastSeq);
        typing.hidden = true;
        if (!findLog("a:" + f.id)) {
          addToLog({ kind: "agent", id: "a:" + f.id, seq: f.seq, content: f.content, agent: f.agent, at: f.at });
          if (!isOpen || document.visibilityState !== "visible") {
            state.unread++; save("unread", state.unread); showBadge();
          }
        }
        markRead();
        break;
      }
      case "ack": {
        state.outbox = state.outbox.filter(function (m) { return m.id !== f.id; });
        save("outbox", state.outbox);
        var entry = findLog(f.id);
        if (entry) { entry.status = "sent"; save("log", state.log); rerender(entry); }
        break;
      }
      case "typing":
        typing.textContent = (f.agent || t.agent) + " " + t.typing;
        typing.hidden = !f.on;
        break;
      case "error":
        lastError = f.code;
        if (f.id) {
          var m = findLog(f.id);
          if (f.retry_after_ms != null) {
            setTimeout(flushOutbox, f.retry_after_ms);
          } else {
            // Sending the same message again will not help: drop it from the outbox.
            state.outbox = state.outbox.filter(function (x) { return x.id !== f.id; });
            save("outbox", state.outbox);
            if (m) { m.status = "failed"; save("log", state.log); rerender(m); }
            setNotice(f.message);
          }
        } else if (f.fatal && f.code !== "resync" && f.code !== "slow_consumer") {
          setNotice(f.message);
        }
        break;
      case "pong":
        break;
    }
  }
  function markRead() {
    if (isOpen && document.visibilityState === "visible" && state.lastSeq > 0) {
      send({ type: "read", seq: state.lastSeq });
    }
  }
  function flushOutbox() {
    state.outbox.forEach(function (m) { send({ type: "message", id: m.id, content: m.content }); });
  }
  function newId() {
    var rnd = new Uint8Array(8);
    (window.crypto || window.msCrypto).getRandomValues(rnd);
    return "c-" + Date.now().toString(36) + "-" + Array.prototype.map.call(rnd, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function queue(content) {
    var m = { id: newId(), content: content };
    state.outbox.push(m);
    save("outbox", state.outbox);
    addToLog({ kind: "me", id: m.id, content: content, status: "sending", at: new Date().toISOString() });
    send({ type: "message", id: m.id, content: content });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    stopTyping();
    queue({ type: "text", text: text });
    input.focus();
  });
  // Tells the agent the visitor is typing: a start, a repeat every 2 s while keys keep
  // coming (the server forwards at most one every 3 s), a stop after 4 s without a key.
  var typingSince = 0, typingStop = null;
  function stopTyping() {
    if (typingStop) { clearTimeout(typingStop); typingStop = null; }
    if (typingSince) { typingSince = 0; send({ type: "typing", on: false }); }
  }
  input.addEventListener("input", function () {
    if (!input.value.trim()) { stopTyping(); return; }
    var now = Date.now();
    if (now - typingSince >= 2000 && send({ type: "typing", on: true })) typingSince = now;
    if (typingStop) clearTimeout(typingStop);
    typingStop = setTimeout(stopTyping, 4000);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit"));
    }
  });
  imageBtn.addEventListener("click", function () { fileInput.click(); });
  fileInput.addEventListener("change", function () {
    var file = fileInput.files && fileInput.files[0];
    fileInput.value = "";
    if (!file) return;
    if (!/^image\/(png|jpeg|gif|webp)$/.test(file.type)) { setNotice(t.notImage); return; }
    if (file.size > state.maxImage) { setNotice(t.tooBig); return; }
    var headers = { "Content-Type": file.type };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    else if (state.visitor) headers["X-Webchat-Visitor"] = state.visitor;
    fetch(base + "upload", { method: "POST", headers: headers, body: file })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(function (j) { setNotice(""); queue({ type: "image", media_id: j.media_id }); })
      .catch(function () { setNotice(t.uploadFailed); });
  });

  // A small API for the host page.
  window.__switchboardChat = {
    open: open,
    close: close,
    setToken: function (token) { state.token = token; if (ws) ws.close(); },
    state: function () { return root.getAttribute("data-state"); }
  };

  renderAll();
  showBadge();
  connect();
})();
