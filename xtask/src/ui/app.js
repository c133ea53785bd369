// The dashboard of `cargo xtask ui` / `cargo xtask dev`: polls GET /api/state
// every second and redraws the services table in place (inputs keep what is
// typed in them), and runs the start / stop / restart / port actions.
//
// The access token comes from `?token=` in the address, is kept in this tab's
// sessionStorage and removed from the address bar; every API request sends it
// in the X-Token header.
"use strict";

(() => {
  const TOKEN_KEY = "xtask-dashboard-token";
  const OPEN_LOGS_KEY = "xtask-dashboard-open-logs";
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000; // when the tab is in the background
  const MAX_BACKOFF_MS = 5000; // while the server does not answer
  const STATE_TIMEOUT_MS = 10000;
  const NOTE_MS = 8000; // how long a success note stays next to a row
  const COLUMNS = 7;

  const $ = (id) => document.getElementById(id);

  // ---- token ---------------------------------------------------------------

  function takeToken() {
    let fromUrl = null;
    try {
      const url = new URL(window.location.href);
      if (url.searchParams.has("token")) {
        fromUrl = url.searchParams.get("token") || null;
        url.searchParams.delete("token");
        const rest = url.pathname + (url.searchParams.toString() ? `?${url.searchParams}` : "") + url.hash;
        window.history.replaceState(window.history.state, "", rest);
      }
    } catch {
      /* keep going without one */
    }
    try {
      if (fromUrl) sessionStorage.setItem(TOKEN_KEY, fromUrl);
      return fromUrl || sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return fromUrl; // storage disabled: this load still works
    }
  }

  function forgetToken() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* nothing to forget */
    }
  }

  const app = {
    token: takeToken(),
    authError: null, // the server's refusal, once it refused the token
    connError: null, // the last failure to read the state
    failures: 0,
    lastState: null,
    order: [], // service names, in the table's order
    rows: new Map(), // name -> the row's elements
    busy: new Map(), // name -> { label, since }
    notes: new Map(), // name -> { kind: "error" (banner) | "invalid" | "ok" (under the row), text, timer }
    openLogs: loadOpenLogs(),
  };

  // ---- API -----------------------------------------------------------------

  /** One request; never throws. Resolves to {ok, status, data, error, auth, network}. */
  async function api(method, path, body, timeoutMs) {
    const headers = {};
    if (app.token) headers["X-Token"] = app.token;
    // "same-origin": by the Fetch standard a POST under the page's no-referrer
    // policy carries `Origin: null` (Chromium sends the origin anyway), which
    // the server would refuse as a request from another site.
    const init = { method, headers, cache: "no-store", credentials: "same-origin", referrerPolicy: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let timer = null;
    if (timeoutMs) {
      const controller = new AbortController();
      init.signal = controller.signal;
      timer = setTimeout(() => controller.abort(), timeoutMs);
    }
    let res;
    let text = "";
    try {
      res = await fetch(path, init);
      text = await res.text();
    } catch (err) {
      const why = err && err.name === "AbortError" ? `no answer within ${timeoutMs / 1000} s` : "the connection failed";
      return { ok: false, status: 0, network: true, error: why };
    } finally {
      if (timer) clearTimeout(timer);
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    const plain = !data && text ? text.trim().slice(0, 300) : "";
    const serverError = data && typeof data.error === "string" && data.error ? data.error : plain || null;
    if (res.status === 403) {
      return { ok: false, status: 403, auth: true, error: serverError || "the server refused the request (HTTP 403)" };
    }
    if (!res.ok || data === null || data.ok === false) {
      return { ok: false, status: res.status, error: serverError || `HTTP ${res.status}` };
    }
    return { ok: true, status: res.status, data };
  }

  // ---- polling -------------------------------------------------------------

  let pollTimer = null;
  let polling = false;
  let pollAgain = false;

  async function poll() {
    clearTimeout(pollTimer);
    pollTimer = null;
    if (app.authError) return;
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = true;
    const r = await api("GET", "/api/state", undefined, STATE_TIMEOUT_MS);
    polling = false;
    if (r.ok) {
      app.failures = 0;
      app.connError = null;
      app.lastState = r.data;
      render(r.data);
    } else if (r.auth) {
      refused(r.error);
      return; // a refused token stays refused: stop asking
    } else {
      app.failures += 1;
      app.connError = r.network
        ? `Cannot reach cargo xtask at ${window.location.host} (${r.error}). Is it still running? Retrying…`
        : `Could not read the state of the services: ${r.error}. Retrying…`;
      renderChrome();
    }
    if (pollAgain) {
      pollAgain = false;
      poll();
      return;
    }
    schedule();
  }

  function schedule() {
    clearTimeout(pollTimer);
    const base = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    const delay = app.failures > 0 ? Math.min(MAX_BACKOFF_MS, base * 2 ** (app.failures - 1)) : base;
    pollTimer = setTimeout(poll, delay);
  }

  function pollNow() {
    if (polling) pollAgain = true;
    else poll();
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !app.authError) pollNow();
  });

  function refused(error) {
    app.authError = error || "forbidden";
    forgetToken();
    clearTimeout(pollTimer);
    const body = $("service-rows");
    body.replaceChildren(placeholderRow("No access: the services are not shown without the dashboard's token."));
    app.order = [];
    app.rows.clear();
    $("others-body").replaceChildren(para("empty", "—"));
    renderChrome();
  }

  // ---- actions -------------------------------------------------------------

  const VERB_LABEL = { start: "starting…", stop: "stopping…", restart: "restarting…" };
  const VERB_PAST = { start: "start", stop: "stop", restart: "restart", port: "port change" };

  async function act(name, verb, body, label) {
    if (app.busy.has(name) || app.authError) return;
    clearNote(name);
    app.busy.set(name, { label: label || VERB_LABEL[verb] || `${verb}…`, since: Date.now() });
    renderRow(name);
    renderChrome();
    const r = await api("POST", `/api/services/${encodeURIComponent(name)}/${verb}`, body);
    app.busy.delete(name);
    if (r.ok) {
      const message = r.data && typeof r.data.message === "string" && r.data.message ? r.data.message : "done";
      setNote(name, "ok", message);
      if (verb === "port") {
        const row = app.rows.get(name);
        if (row) row.portInput.value = "";
      }
    } else if (r.auth) {
      refused(r.error);
      return;
    } else {
      const why = r.network ? "the connection to cargo xtask failed" : r.error;
      setNote(name, "error", `${VERB_PAST[verb] || verb} failed: ${why}`);
      app.notes.get(name).verb = VERB_PAST[verb] || verb;
    }
    renderRow(name);
    renderChrome();
    pollNow();
  }

  function setNote(name, kind, text) {
    clearNote(name);
    const note = { kind, text, timer: null };
    if (kind === "ok") {
      note.timer = setTimeout(() => {
        if (app.notes.get(name) === note) {
          app.notes.delete(name);
          renderRow(name);
        }
      }, NOTE_MS);
    }
    app.notes.set(name, note);
  }

  function clearNote(name) {
    const old = app.notes.get(name);
    if (old && old.timer) clearTimeout(old.timer);
    app.notes.delete(name);
  }

  function submitPort(name) {
    const row = app.rows.get(name);
    if (!row) return;
    const raw = row.portInput.value.trim();
    const port = Number(raw);
    if (!/^\d+$/.test(raw) || port < 1 || port > 65535) {
      setNote(name, "invalid", raw ? `"${raw}" is not a port: enter a number from 1 to 65535` : "type the new port first");
      renderRow(name);
      renderChrome();
      row.portInput.focus();
      return;
    }
    if (row.service && row.service.port === port) {
      setNote(name, "invalid", `${row.service.title || name} is already on port ${port}`);
      renderRow(name);
      renderChrome();
      return;
    }
    act(name, "port", { port }, `moving to ${port}…`);
  }

  // ---- rendering -----------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key === "testid") node.dataset.testid = value;
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  const para = (cls, text) => el("p", { class: cls, text });

  function placeholderRow(text) {
    return el("tr", { class: "placeholder" }, el("td", { colspan: COLUMNS, text }));
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setClass(node, name, on) {
    if (node.classList.contains(name) !== Boolean(on)) node.classList.toggle(name, Boolean(on));
  }

  function render(state) {
    const services = Array.isArray(state.services) ? state.services : [];
    const names = services.map((s) => String(s.name));
    if (names.join("\n") !== app.order.join("\n")) buildRows(names);
    for (const service of services) {
      const row = app.rows.get(String(service.name));
      if (row) row.service = service;
    }
    for (const name of app.order) renderRow(name);
    renderOthers(Array.isArray(state.others) ? state.others : []);
    renderChrome();
  }

  function buildRows(names) {
    const body = $("service-rows");
    const keep = new Map(app.rows);
    app.rows.clear();
    const nodes = [];
    for (const name of names) {
      const row = keep.get(name) || buildRow(name);
      app.rows.set(name, row);
      nodes.push(row.tr, row.noteTr, row.logTr);
    }
    if (nodes.length === 0) nodes.push(placeholderRow("ports.toml lists no services."));
    body.replaceChildren(...nodes);
    app.order = names;
    // The logs that were open before a reload open again.
    for (const name of names) if (app.openLogs.has(name) && app.rows.get(name).logTr.hidden) toggleLog(name, true);
  }

  function buildRow(name) {
    const r = { name, service: null, lastLog: null };
    const logId = `log-row-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;

    r.disclose = el("button", {
      type: "button",
      class: "disclose",
      "aria-expanded": "false",
      "aria-controls": logId,
      title: "Show the log",
      onclick: () => toggleLog(name),
    });
    r.dot = el("span", { class: "dot", "aria-hidden": "true" });
    r.title = el("span", { class: "svc-title" });
    r.nameTag = el("span", { class: "svc-name", text: name });
    r.deps = el("span", { class: "svc-deps" });
    const serviceCell = el(
      "td",
      { class: "col-service" },
      el("div", { class: "svc" }, r.disclose, r.dot, el("div", { class: "svc-text" }, el("div", { class: "svc-line" }, r.title, r.nameTag), r.deps)),
    );

    r.port = el("span", { testid: `port-${name}`, class: "mono" });
    r.state = el("span", { testid: `state-${name}`, class: "state" });
    r.busy = el("div", { testid: `busy-${name}`, class: "busy", role: "status" }, el("span", { class: "spinner", "aria-hidden": "true" }), el("span", { class: "busy-text" }));
    r.busy.remove();
    r.failed = el("div", { class: "failed" });
    r.stateCell = el("td", { class: "col-state" }, r.state);
    r.pid = el("td", { testid: `pid-${name}`, class: "col-pid num mono" });
    r.health = el("td", { testid: `health-${name}`, class: "col-health" });
    r.url = el("a", { testid: `url-${name}`, class: "url", target: "_blank", rel: "noopener noreferrer" });
    r.url.addEventListener("click", (ev) => onUrlClick(ev, r));
    r.named = el("a", { testid: `named-${name}`, class: "url named", target: "_blank", rel: "noopener noreferrer", hidden: true });

    r.start = el("button", { type: "button", class: "btn", testid: `start-${name}`, text: "Start", onclick: () => act(name, "start") });
    r.stop = el("button", { type: "button", class: "btn btn-stop", testid: `stop-${name}`, text: "Stop", onclick: () => act(name, "stop") });
    r.restart = el("button", { type: "button", class: "btn", testid: `restart-${name}`, text: "Restart", onclick: () => act(name, "restart") });
    r.portInput = el("input", {
      type: "text",
      inputmode: "numeric",
      autocomplete: "off",
      spellcheck: "false",
      maxlength: "5",
      class: "port-input mono",
      testid: `port-input-${name}`,
      "aria-label": `New port for ${name}`,
      placeholder: "port",
    });
    r.portSet = el("button", { type: "submit", class: "btn", testid: `port-set-${name}`, text: "Set port" });
    r.portInput.addEventListener("input", () => {
      if (app.notes.get(name)?.kind === "invalid") {
        clearNote(name);
        renderRow(name);
      }
    });
    const form = el("form", { class: "port-form", novalidate: true }, r.portInput, r.portSet);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      submitPort(name);
    });
    r.actionsCell = el("td", { class: "col-actions" }, el("div", { class: "actions" }, el("div", { class: "btn-group" }, r.start, r.stop, r.restart), form));
    // A line under the row for a mistyped port or an action's outcome: it
    // never widens the table's columns.
    r.note = el("div", { class: "note", testid: `note-${name}`, role: "status" });
    r.noteTr = el("tr", { class: "note-row", hidden: true }, el("td", { colspan: COLUMNS }, r.note));

    r.tr = el(
      "tr",
      { class: "svc-row", testid: `row-${name}`, "data-service": name },
      serviceCell,
      el("td", { class: "col-port num" }, r.port),
      r.stateCell,
      r.pid,
      r.health,
      el("td", { class: "col-url" }, r.url, r.named),
      r.actionsCell,
    );

    r.log = el("pre", { class: "log", testid: `log-${name}`, tabindex: "0", "aria-label": `Recent log lines of ${name}` });
    r.logCaption = el("div", { class: "log-caption" });
    r.logTr = el(
      "tr",
      { class: "log-row", id: logId, hidden: true },
      el("td", { colspan: COLUMNS }, el("div", { class: "log-wrap" }, r.log, r.logCaption)),
    );
    return r;
  }

  function health(service) {
    if (!service.running || service.healthy === null || service.healthy === undefined) return "—";
    return service.healthy ? "healthy" : "not answering";
  }

  function renderRow(name) {
    const r = app.rows.get(name);
    if (!r || !r.service) return;
    const s = r.service;
    const busy = app.busy.get(name);
    const note = app.notes.get(name);
    const running = Boolean(s.running);
    const h = health(s);

    setText(r.title, s.title || name);
    setClass(r.nameTag, "hidden-name", !s.title || String(s.title).toLowerCase() === name.toLowerCase());
    const deps = Array.isArray(s.depends_on) ? s.depends_on : [];
    setText(r.deps, deps.length ? `needs ${deps.join(", ")}` : "");

    setText(r.port, s.port === null || s.port === undefined ? "—" : String(s.port));
    setText(r.state, running ? "running" : "stopped");
    r.state.dataset.state = running ? "running" : "stopped";
    setText(r.pid, s.pid === null || s.pid === undefined ? "—" : String(s.pid));
    setText(r.health, h);
    r.health.dataset.health = h === "healthy" ? "ok" : h === "not answering" ? "warn" : "none";

    let status = "off";
    if (busy) status = "busy";
    else if (note && note.kind === "error" && !running) status = "bad";
    else if (running) status = h === "healthy" ? "ok" : "warn";
    if (r.dot.dataset.status !== status) r.dot.dataset.status = status;
    r.dot.title = { off: "stopped", busy: busy ? busy.label : "", bad: "stopped after an error", ok: "running, healthy", warn: "running, not answering" }[status];

    renderUrl(r, s);

    if (busy) {
      const secs = Math.floor((Date.now() - busy.since) / 1000);
      setText(r.busy.lastChild, secs >= 2 ? `${busy.label} ${secs}s` : busy.label);
      if (!r.busy.isConnected) r.stateCell.append(r.busy);
    } else if (r.busy.isConnected) {
      r.busy.remove();
    }
    setClass(r.tr, "is-busy", busy);

    // The banner tells why; the row only shows which one failed.
    if (!busy && note && note.kind === "error") {
      setText(r.failed, `✕ ${note.verb || "action"} failed`);
      r.failed.title = note.text;
      if (!r.failed.isConnected) r.stateCell.append(r.failed);
    } else if (r.failed.isConnected) {
      r.failed.remove();
    }

    const locked = Boolean(busy) || Boolean(app.authError);
    r.start.disabled = locked || running;
    r.stop.disabled = locked || !running;
    r.restart.disabled = locked;
    r.portSet.disabled = locked;
    r.portInput.disabled = locked;
    const portText = s.port === null || s.port === undefined ? "port" : String(s.port);
    if (r.portInput.placeholder !== portText) r.portInput.placeholder = portText;

    // An action's failure is told in the banner; the line under the row
    // tells a mistyped port, and for a few seconds how an action went.
    const inline = note && note.kind !== "error" ? note : null;
    setText(r.note, inline ? `${inline.kind === "ok" ? "✓" : "✕"} ${inline.text}` : "");
    if (inline) r.note.dataset.kind = inline.kind;
    r.noteTr.hidden = !inline;
    setClass(r.tr, "has-note", inline);

    renderLog(r, s);
  }

  function renderUrl(r, s) {
    const url = typeof s.url === "string" ? s.url : "";
    let safe = "";
    let shown = url;
    try {
      const parsed = new URL(url);
      if (!/^(javascript|data|vbscript|blob|file):$/i.test(parsed.protocol)) safe = url;
      if (/^https?:$/.test(parsed.protocol)) shown = (parsed.host + parsed.pathname + parsed.search).replace(/\/$/, "");
    } catch {
      safe = "";
    }
    if (r.url.getAttribute("href") !== (safe || "#")) r.url.setAttribute("href", safe || "#");
    setText(r.url, shown || "—");
    r.url.title = /^https?:/i.test(safe) ? `Open ${url}` : `${url} (click to copy)`;
    r.url.dataset.web = /^https?:/i.test(safe) ? "yes" : "no";
    setClass(r.url, "is-down", !s.running);
    // Its named URL, through the proxy: the same whatever port it moves to.
    const named = typeof s.public_url === "string" && /^http:\/\//.test(s.public_url) ? s.public_url : "";
    r.named.hidden = !named;
    if (r.named.getAttribute("href") !== (named || "#")) r.named.setAttribute("href", named || "#");
    setText(r.named, named.replace(/^http:\/\//, ""));
    r.named.title = named ? `Open ${named}, its named URL: it stays the same when the port moves` : "";
    setClass(r.named, "is-down", !s.running);
  }

  function onUrlClick(ev, r) {
    if (r.url.dataset.web === "yes") return; // a web page: let the browser open it
    ev.preventDefault();
    const url = r.service && r.service.url;
    if (!url || !navigator.clipboard) return;
    navigator.clipboard.writeText(url).then(
      () => {
        setNote(r.name, "ok", `copied ${url}`);
        renderRow(r.name);
      },
      () => {},
    );
  }

  // ANSI colour codes (uvicorn, next dev) and other escape sequences.
  // eslint-disable-next-line no-control-regex
  const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)|\u001b[@-_]/g;

  function renderLog(r, s) {
    const lines = Array.isArray(s.log) ? s.log.map((l) => String(l).replace(ANSI, "").replace(/\r/g, "")) : [];
    const key = lines.join("\n");
    if (key === r.lastLog) return;
    r.lastLog = key;
    const pre = r.log;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    if (lines.length === 0) {
      pre.replaceChildren(el("span", { class: "log-empty", text: "(no output yet)" }));
    } else {
      pre.replaceChildren(
        ...lines.map((line) => {
          let cls = "line";
          if (/\b(error|errors|exception|traceback|fatal|panic(ked)?|failed)\b/i.test(line)) cls += " line-bad";
          else if (/\b(warn|warning)\b/i.test(line)) cls += " line-warn";
          return el("span", { class: cls, text: `${line}\n` });
        }),
      );
    }
    if (atBottom) pre.scrollTop = pre.scrollHeight;
    setText(r.logCaption, lines.length ? `last ${lines.length} line${lines.length === 1 ? "" : "s"} · the whole log: cargo xtask logs ${r.name}` : `cargo xtask logs ${r.name}`);
  }

  function toggleLog(name, open) {
    const r = app.rows.get(name);
    if (!r) return;
    const show = open === undefined ? r.logTr.hidden : open;
    r.logTr.hidden = !show;
    r.disclose.setAttribute("aria-expanded", String(show));
    r.disclose.title = show ? "Hide the log" : "Show the log";
    setClass(r.tr, "log-open", show);
    setClass(r.noteTr, "log-open", show);
    if (show) {
      app.openLogs.add(name);
      r.log.scrollTop = r.log.scrollHeight;
    } else {
      app.openLogs.delete(name);
    }
    saveOpenLogs();
    renderToggleAll();
  }

  function renderToggleAll() {
    const all = app.order.length > 0 && app.order.every((n) => app.openLogs.has(n));
    setText($("toggle-all-logs"), all ? "Hide all logs" : "Show all logs");
  }

  $("toggle-all-logs").addEventListener("click", () => {
    const all = app.order.length > 0 && app.order.every((n) => app.openLogs.has(n));
    for (const name of app.order) toggleLog(name, !all);
  });

  function loadOpenLogs() {
    try {
      const list = JSON.parse(sessionStorage.getItem(OPEN_LOGS_KEY) || "[]");
      return new Set(Array.isArray(list) ? list.map(String) : []);
    } catch {
      return new Set();
    }
  }

  function saveOpenLogs() {
    try {
      sessionStorage.setItem(OPEN_LOGS_KEY, JSON.stringify([...app.openLogs]));
    } catch {
      /* not remembered across reloads then */
    }
  }

  function renderOthers(others) {
    const key = JSON.stringify(others);
    const box = $("others-body");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    if (others.length === 0) {
      box.replaceChildren(para("empty", "No other checkout has ports reserved on this machine."));
      return;
    }
    const rows = others.map((o) => {
      const ports = o && o.ports && typeof o.ports === "object" ? Object.entries(o.ports) : [];
      const chips = el(
        "div",
        { class: "chips" },
        ...ports.map(([svc, port]) => el("span", { class: "chip" }, el("span", { class: "chip-name", text: svc }), el("span", { class: "chip-port mono", text: String(port) }))),
      );
      if (ports.length === 0) chips.append(el("span", { class: "muted", text: "no ports" }));
      let dash = el("span", { class: "muted", text: "—" });
      if (o && Number.isInteger(o.dashboard)) {
        const href = `${window.location.protocol}//${window.location.hostname}:${o.dashboard}/`;
        dash = el("a", { href, target: "_blank", rel: "noopener noreferrer", class: "mono", title: "That checkout's dashboard (it needs its own token)", text: `:${o.dashboard}` });
      }
      const name = el("span", { class: "badge", text: String((o && o.name) || "—"), title: "Its name in the named URLs" });
      return el("tr", null, el("td", { class: "mono path", text: String((o && o.path) || "?") }), el("td", null, name), el("td", null, chips), el("td", { class: "num" }, dash));
    });
    box.replaceChildren(
      el(
        "table",
        { class: "others" },
        el("thead", null, el("tr", null, el("th", { scope: "col", text: "Checkout" }), el("th", { scope: "col", text: "Name" }), el("th", { scope: "col", text: "Reserved ports" }), el("th", { scope: "col", class: "num", text: "Dashboard" }))),
        el("tbody", null, ...rows),
      ),
    );
  }

  // Header, summary, live indicator, and the error banner.
  function renderChrome() {
    const state = app.lastState;
    if (state) {
      const checkout = String(state.checkout || "");
      setText($("checkout"), checkout || "?");
      $("checkout").title = checkout;
      const base = checkout.split(/[\\/]/).filter(Boolean).pop() || checkout;
      const name = $("name");
      name.hidden = !state.name;
      setText(name, state.name || "");
      name.title = state.name && state.proxy ? `Named URLs: http://<service>.${state.name}.localhost:${state.proxy}` : "";
      const services = Array.isArray(state.services) ? state.services : [];
      const up = services.filter((s) => s.running).length;
      const sick = services.filter((s) => s.running && s.healthy === false).length;
      const title = `${up}/${services.length} · ${base} · cargo xtask`;
      if (document.title !== title) document.title = title;

      const mode = $("mode");
      if (state.mode === "dev" || state.mode === "background") {
        mode.hidden = false;
        setText(mode, state.mode === "dev" ? "cargo xtask dev" : "background");
        mode.title = state.mode === "dev" ? "Started by cargo xtask dev: Ctrl-C in its terminal stops everything" : "Services run in the background (cargo xtask start / stop)";
        mode.dataset.mode = state.mode;
      } else {
        mode.hidden = true;
      }

      let summary = `${up} of ${services.length} running`;
      if (sick) summary += ` · ${sick} not answering`;
      else if (up && up === services.length) summary += " · all healthy";
      setText($("summary"), summary);
    }

    const live = $("live");
    const liveState = app.authError ? "off" : app.connError ? "bad" : state ? "ok" : "wait";
    live.dataset.state = liveState;
    setText($("live-text"), { off: "no access", bad: "reconnecting…", ok: "live", wait: "connecting…" }[liveState]);
    setClass(document.body, "stale", Boolean(app.connError));
    setClass(document.body, "refused", Boolean(app.authError));
    if (app.authError && $("checkout").textContent === "…") setText($("checkout"), "");

    renderBanner();
    renderToggleAll();
  }

  function renderBanner() {
    const slot = $("banner-slot");
    const items = [];
    let kind = null;
    if (app.authError) {
      kind = "auth";
      items.push(
        el(
          "div",
          { class: "banner-item" },
          el("strong", { text: "This dashboard needs its access token." }),
          " Open the address printed by cargo xtask, with its token: ",
          el("code", { text: `http://${window.location.host}/?token=…` }),
          el("div", {
            class: "banner-detail",
            text: `cargo xtask ui and cargo xtask dev print it when they start.${
              /address printed/i.test(app.authError) ? "" : ` The server said: ${app.authError}`
            }`,
          }),
        ),
      );
    } else if (app.connError) {
      kind = "connection";
      items.push(el("div", { class: "banner-item", text: app.connError }));
    }
    for (const [name, note] of app.notes) {
      if (note.kind !== "error") continue;
      kind = kind || "action";
      const title = (app.rows.get(name) && app.rows.get(name).service && app.rows.get(name).service.title) || name;
      items.push(
        el(
          "div",
          { class: "banner-item" },
          el("strong", { text: `${title}: ` }),
          note.text,
          el("button", {
            type: "button",
            class: "banner-close",
            title: "Dismiss",
            "aria-label": `Dismiss the error of ${name}`,
            text: "×",
            onclick: () => {
              clearNote(name);
              renderRow(name);
              renderChrome();
            },
          }),
        ),
      );
    }

    const existing = slot.firstElementChild;
    if (items.length === 0) {
      if (existing) existing.remove();
      return;
    }
    const banner = el("div", { class: "banner", role: "alert", testid: "error", "data-kind": kind }, ...items);
    // Redraw only when the text changes, so screen readers do not re-announce it every second.
    if (existing && existing.textContent === banner.textContent && existing.dataset.kind === kind) return;
    slot.replaceChildren(banner);
  }

  // ---- start ---------------------------------------------------------------

  // Without a token, ask anyway: the page then shows the server's own refusal.
  renderChrome();
  poll();
})();
