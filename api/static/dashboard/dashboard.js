/* taskexec operations dashboard: overview (cards, SVG charts, tables), sign-in, routing, live refresh.
   The task list, the task page with its actions and the dead letters are in tasks.js (window.TELViews). */
(function () {
  "use strict";
  const API = "/api/v1";
  const KEY = "taskexec.dashboard.token";
  const REFRESH_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const STATUSES = ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED", "RUNNING", "ASSIGNED", "PENDING"];
  const TYPES = ["AUTOMATED", "MANUAL", "INTEGRATION"];
  const TYPE_COLORS = { AUTOMATED: "#3b82f6", MANUAL: "#e5b62e", INTEGRATION: "#8b5cf6" };
  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(KEY) || "",
    window: sessionStorage.getItem(KEY + ".window") || "1h",
    definition: sessionStorage.getItem(KEY + ".definition") || "",
    timer: null, lastOk: 0, me: null,
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue("--" + name).trim() || "#8a93a6";
  }

  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(decodeURIComponent(escape(atob(part))));
    } catch (e) { return null; }
  }

  // A JWT has three dot-separated parts; anything else is an API key.
  function credentialHeaders(token) {
    return token.split(".").length === 3 ? { Authorization: "Bearer " + token } : { "X-API-Key": token };
  }

  async function api(path, opts) {
    const o = opts || {};
    const headers = credentialHeaders(state.token);
    if (o.body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(API + path, { method: o.method || "GET", headers,
      body: o.body === undefined ? undefined : JSON.stringify(o.body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401) signOut("Your token was refused: " + errText(data));
    return { status: resp.status, ok: resp.ok, data };
  }

  function errText(data) { return (data && data.error && data.error.message) || "unexpected error"; }

  const fmt = {
    n: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString()),
    pct: (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%"),
    dur(sec) {
      if (sec === null || sec === undefined) return "–";
      const s = Math.abs(sec);
      if (s < 60) return Math.round(s) + "s";
      if (s < 3600) return Math.floor(s / 60) + "m " + Math.round(s % 60) + "s";
      if (s < 86400) return Math.floor(s / 3600) + "h " + Math.round((s % 3600) / 60) + "m";
      return Math.floor(s / 86400) + "d " + Math.round((s % 86400) / 3600) + "h";
    },
    time(iso) { return iso ? new Date(iso).toLocaleString() : "–"; },
    clock(iso) { return iso ? new Date(iso).toLocaleTimeString() : "–"; },
    short(id) { return id ? id.slice(0, 8) : ""; },
  };

  function taskLink(id) { return el("a", { href: "#/task/" + encodeURIComponent(id), class: "mono", title: id, text: fmt.short(id) }); }
  function statusBadge(s) { return el("span", { class: "status " + s, text: s }); }

  function fillTable(id, rows, build) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren(...rows.map(build));
    const empty = document.querySelector(`[data-empty-for='${id}']`);
    if (empty) empty.hidden = rows.length > 0;
    $(id).hidden = rows.length === 0;
  }

  // ------------------------------------------------------------------ sign in / out

  async function signIn(token) {
    if (!token) { $("signin-error").textContent = "Paste a token or an API key."; return; }
    if (token.split(".").length === 3 && !claims(token)) { $("signin-error").textContent = "That does not look like a JWT."; return; }
    state.token = token;
    const r = await api("/me");
    if (!r.ok) { if (r.status !== 401) signOut("Could not sign in: " + errText(r.data)); return; }
    state.me = r.data;
    sessionStorage.setItem(KEY, token);
    $("signin-error").textContent = "";
    $("who-name").textContent = r.data.sub;
    $("who-roles").textContent = r.data.roles.length ? "(" + r.data.roles.join(", ") + ")" : "";
    $("signin-panel").hidden = true;
    $("controls").hidden = false;
    $("nav").hidden = false;
    if (!can("tasks:monitor") && !location.hash.startsWith("#/task")) location.hash = "#/tasks";
    route();
  }

  // What the signed-in principal may do (GET /api/v1/me); `admin` may do everything.
  function can(permission) {
    const perms = (state.me && state.me.permissions) || [];
    return perms.includes("admin") || perms.includes(permission);
  }

  function signOut(reason) {
    state.token = "";
    state.me = null;
    sessionStorage.removeItem(KEY);
    clearInterval(state.timer);
    $("controls").hidden = true;
    $("nav").hidden = true;
    for (const id of VIEWS) $(id).hidden = true;
    $("signin-panel").hidden = false;
    $("signin-error").textContent = reason || "";
  }

  // ------------------------------------------------------------------ overview

  async function loadOverview() {
    const q = "?window=" + encodeURIComponent(state.window) +
      (state.definition ? "&definition=" + encodeURIComponent(state.definition) : "");
    const r = await api("/stats/overview" + q);
    if (!r.ok) {
      if (r.status === 403) showBanner("This token may not read the dashboard (it needs the monitor or admin role).");
      else if (r.status !== 401) showBanner("Could not refresh: " + errText(r.data));
      $("updated").classList.add("stale");
      return;
    }
    showBanner(null);
    state.lastOk = Date.now();
    $("updated").classList.remove("stale");
    $("updated").textContent = "updated " + fmt.clock(r.data.generatedAt);
    render(r.data);
  }

  function showBanner(text) { $("banner").hidden = !text; $("banner").textContent = text || ""; }

  function render(d) {
    renderDefinitions(d.definitions);
    const by = d.totals.byStatus;
    const sum = (obj, key) => Object.values(obj).reduce((a, per) => a + (per[key] || 0), 0);
    kpi("submitted", d.totals.submitted);
    kpi("completed", by.COMPLETED || 0);
    kpi("failed", (by.FAILED || 0) + (by.TIMED_OUT || 0), by.TIMED_OUT ? by.TIMED_OUT + " timed out" : "");
    kpi("ratio", fmt.pct(d.totals.failureRatio), null, d.totals.failureRatio > 0.05);
    kpi("running", sum(d.open, "RUNNING"));
    kpi("pending", sum(d.open, "PENDING"));
    kpi("assigned", sum(d.open, "ASSIGNED"));
    const backlog = d.outbox.reduce((a, o) => a + o.count, 0);
    const oldest = Math.max(0, ...d.outbox.map((o) => o.oldestAgeSeconds || 0));
    kpi("outbox", backlog, backlog ? "oldest " + fmt.dur(oldest) : "all delivered", oldest > 300);
    $("kpi-completed").querySelector(".sub").textContent = by.CANCELLED ? by.CANCELLED + " cancelled" : "";

    const tl = d.timeline;
    const b = tl.bucketSeconds;
    $("bucket-info").textContent = "per " + (b < 60 ? b + " s" : b < 3600 ? b / 60 + " min" : b / 3600 + " h") + ", by submission time";
    const statusSeries = STATUSES.filter((s) => tl.byStatus[s]).map((s) => ({ name: s, color: cssVar(s), values: tl.byStatus[s] }));
    stackedBars($("chart-status"), tl, statusSeries);
    legend($("legend-status"), statusSeries);
    const typeSeries = TYPES.map((t) => ({ name: t, color: TYPE_COLORS[t], values: tl.byType[t] || [] }));
    lines($("chart-type"), tl, typeSeries);
    legend($("legend-type"), typeSeries);

    renderPools(d.pools, d.brokerReachable);
    $("running-count").textContent = d.running.length;
    fillTable("running-table", d.running, (t) => el("tr", { "data-task-id": t.id },
      el("td", {}, taskLink(t.id)), el("td", { text: t.taskDefinitionId }),
      el("td", { class: "mono small", text: t.workerId || "–" }), el("td", { class: "num", text: t.attempt }),
      el("td", { class: "num", text: fmt.dur(t.ageSeconds) })));
    renderErrorCodes(d.errorCodes);
    $("failures-count").textContent = d.failures.length;
    fillTable("failures-table", d.failures, (f) => el("tr", { "data-task-id": f.id },
      el("td", { text: fmt.time(f.failedAt) }), el("td", {}, taskLink(f.id)), el("td", { text: f.taskDefinitionId }),
      el("td", {}, statusBadge(f.status)), el("td", {}, el("span", { class: "code", text: f.errorCode || "UNKNOWN" })),
      el("td", { class: "msg", title: f.errorMessage, text: f.errorMessage }), el("td", { class: "num", text: f.retryCount })));
    fillTable("manual-table", d.manualDue, (m) => {
      const left = m.secondsLeft;
      const cls = left < 0 ? "overdue" : left < 3600 ? "soon" : "";
      return el("tr", { "data-task-id": m.id }, el("td", {}, taskLink(m.id)), el("td", { text: m.taskDefinitionId }),
        el("td", { text: m.assignee || (m.candidateRoles.length ? "role " + m.candidateRoles.join(", ") : "–") }),
        el("td", { class: cls, title: fmt.time(m.dueDate), text: left < 0 ? "overdue " + fmt.dur(left) : "in " + fmt.dur(left) }));
    });
    fillTable("workers-table", d.workers, (w) => el("tr", {},
      el("td", { class: "mono small", text: w.workerId }), el("td", { text: w.type }),
      el("td", { class: "num", text: w.running }), el("td", { text: fmt.time(w.oldestSince) })));
  }

  function kpi(name, value, sub, alert) {
    const card = $("kpi-" + name);
    card.querySelector(".value").textContent = typeof value === "number" ? fmt.n(value) : value;
    if (sub !== undefined && sub !== null) card.querySelector(".sub").textContent = sub;
    card.classList.toggle("alert", !!alert);
  }

  function renderDefinitions(defs) {
    const sel = $("f-definition");
    const want = ["", ...defs.map((x) => x.id)].join("|");
    if (sel.dataset.ids !== want) {
      sel.replaceChildren(el("option", { value: "", text: "All definitions" }),
        ...defs.map((x) => el("option", { value: x.id, text: x.id + " (" + x.type.toLowerCase() + ")" })));
      sel.dataset.ids = want;
    }
    sel.value = state.definition;
  }

  function renderPools(pools, reachable) {
    $("broker-state").textContent = reachable ? "" : "broker unreachable: queue lengths unknown";
    fillTable("pools-table", pools.filter((p) => p.pool !== "deadletter" || p.queued), (p) => {
      const load = p.load;
      const bar = el("span", { class: "loadbar" + (load >= 1 ? " full" : load >= 0.75 ? " high" : "") }, el("span"));
      bar.firstChild.style.width = Math.min(100, Math.round((load || 0) * 100)) + "%";
      const busy = p.pool === "manual" ? p.assigned + " assigned" : fmt.n(p.running);
      const online = p.workersOnline === null ? "?" : p.workersOnline;
      return el("tr", { "data-pool": p.pool },
        el("td", { text: p.pool }), el("td", { class: "mono small", text: p.queue }),
        el("td", { class: "num", text: fmt.n(p.queued) }), el("td", { class: "num", text: fmt.n(p.pending) }),
        el("td", { class: "num", text: busy }),
        el("td", { class: "num" + (online === 0 && p.pool !== "deadletter" ? " offline" : ""), text: online,
          title: p.workers.map((w) => w.name + " ×" + w.concurrency).join("\n") }),
        el("td", { class: "num", text: fmt.n(p.capacity) }),
        el("td", {}, load === null ? "–" : bar, load === null ? "" : fmt.pct(load)));
    });
  }

  function renderErrorCodes(codes) {
    const box = $("error-codes");
    const max = Math.max(1, ...codes.map((c) => c.count));
    box.replaceChildren(...codes.map((c) => {
      const fill = el("div", { class: "fill" });
      fill.style.width = Math.max(2, (c.count / max) * 100) + "%";
      return el("div", { class: "bar-row", "data-code": c.code }, el("span", { class: "code", text: c.code }),
        el("div", { class: "track" }, fill), el("span", { class: "n", text: c.count }));
    }));
    document.querySelector("[data-empty-for='error-codes']").hidden = codes.length > 0;
  }

  // ------------------------------------------------------------------ charts (own SVG)

  function frame(box, tl, max) {
    const W = Math.max(320, box.clientWidth || 600), H = Math.max(160, box.clientHeight || 210);
    const pad = { l: 34, r: 8, t: 8, b: 20 };
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
    const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
    for (const frac of [0, 0.5, 1]) {
      const v = Math.round(max * frac);
      root.append(svg("line", { class: frac ? "grid-line" : "axis", x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }));
      const label = svg("text", { x: pad.l - 6, y: y(v) + 3, "text-anchor": "end" });
      label.textContent = v;
      root.append(label);
    }
    const step = (W - pad.l - pad.r) / tl.points;
    const every = Math.ceil(tl.points / 6);
    for (let i = 0; i < tl.points; i += every) {
      const t = svg("text", { x: pad.l + i * step + step / 2, y: H - 5, "text-anchor": "middle" });
      t.textContent = new Date((tl.start + i * tl.bucketSeconds) * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      root.append(t);
    }
    return { root, y, step, pad, W, H };
  }

  function stackedBars(box, tl, series) {
    const totals = Array.from({ length: tl.points }, (_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
    const max = niceMax(Math.max(1, ...totals));
    const f = frame(box, tl, max);
    for (let i = 0; i < tl.points; i++) {
      let acc = 0;
      for (const s of series) {
        const v = s.values[i] || 0;
        if (!v) continue;
        const y0 = f.y(acc), y1 = f.y(acc + v);
        const rect = svg("rect", { class: "bar", x: f.pad.l + i * f.step + 1, y: y1, width: Math.max(1, f.step - 2),
          height: Math.max(1, y0 - y1), fill: s.color, "data-status": s.name, "data-count": v });
        hover(rect, () => bucketLabel(tl, i) + "\n" + s.name + ": " + v);
        f.root.append(rect);
        acc += v;
      }
    }
    box.replaceChildren(f.root);
  }

  function lines(box, tl, series) {
    const max = niceMax(Math.max(1, ...series.flatMap((s) => s.values)));
    const f = frame(box, tl, max);
    for (const s of series) {
      if (!s.values.some((v) => v)) continue;
      const pts = s.values.map((v, i) => [f.pad.l + i * f.step + f.step / 2, f.y(v || 0)]);
      f.root.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: s.color,
        "stroke-width": 2, "stroke-linejoin": "round", "data-type": s.name }));
      pts.forEach((p, i) => {
        if (!s.values[i]) return;
        const dot = svg("circle", { cx: p[0], cy: p[1], r: 3, fill: s.color });
        hover(dot, () => bucketLabel(tl, i) + "\n" + s.name + ": " + s.values[i]);
        f.root.append(dot);
      });
    }
    box.replaceChildren(f.root);
  }

  function niceMax(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return v;
  }

  function bucketLabel(tl, i) {
    return new Date((tl.start + i * tl.bucketSeconds) * 1000).toLocaleString();
  }

  function hover(node, text) {
    const tip = $("tooltip");
    node.addEventListener("mousemove", (e) => {
      tip.textContent = text();
      tip.style.left = e.clientX + 12 + "px";
      tip.style.top = e.clientY + 12 + "px";
      tip.hidden = false;
    });
    node.addEventListener("mouseleave", () => { tip.hidden = true; });
  }

  function legend(box, series) {
    box.replaceChildren(...series.map((s) => {
      const sw = el("span", { class: "sw" });
      sw.style.background = s.color;
      return el("span", {}, sw, s.name);
    }));
  }

  // ------------------------------------------------------------------ routing, refresh

  const VIEWS = ["overview", "tasks-view", "dl-view", "task-view"];

  function route() {
    if (!state.token || !state.me) return;
    clearInterval(state.timer);
    const hash = location.hash;
    const m = hash.match(/^#\/task\/(.+)$/);
    const view = m ? "task-view" : hash.startsWith("#/tasks") ? "tasks-view" : hash.startsWith("#/deadletters") ? "dl-view" : "overview";
    for (const id of VIEWS) $(id).hidden = id !== view;
    $("overview-filters").hidden = view !== "overview";
    const navName = { overview: "overview", "tasks-view": "tasks", "dl-view": "deadletters", "task-view": "tasks" }[view];
    for (const a of $("nav").querySelectorAll("a")) a.classList.toggle("active", a.dataset.view === navName);
    const tick = m ? () => views.task(decodeURIComponent(m[1])) : view === "tasks-view" ? views.tasks
      : view === "dl-view" ? views.deadletters : loadOverview;
    tick();
    if ($("f-live").checked) state.timer = setInterval(tick, REFRESH_MS);
  }

  function setFilter(key, value) {
    state[key] = value;
    sessionStorage.setItem(KEY + "." + key, value);
    if (location.hash.startsWith("#/task/")) location.hash = "#/"; else route();
  }

  const views = window.TELViews({ $, el, api, fmt, state, can, errText, taskLink, statusBadge, fillTable, route });
  $("signin").addEventListener("click", () => signIn($("token").value.trim()));
  $("signout").addEventListener("click", () => signOut());
  $("f-window").addEventListener("change", (e) => setFilter("window", e.target.value));
  $("f-definition").addEventListener("change", (e) => setFilter("definition", e.target.value));
  $("f-live").addEventListener("change", route);
  window.addEventListener("hashchange", route);
  $("f-window").value = state.window;
  if (state.token) signIn(state.token);
})();
