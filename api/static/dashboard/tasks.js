/* taskexec dashboard: the task list (filters, paging), the task page with cancel / retry / re-drive, and the
   dead letters. Buttons are shown only when GET /api/v1/me grants the permission; every action asks first.
   dashboard.js calls window.TELViews(core) with its helpers and routes to the views returned. */
(function () {
  "use strict";
  const STATUSES = ["PENDING", "ASSIGNED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"];
  const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"];
  const WINDOW_MS = { "15m": 9e5, "1h": 36e5, "24h": 864e5, "7d": 6048e5 };

  window.TELViews = function (core) {
    const { $, el, api, fmt, state, can, errText, taskLink, statusBadge, fillTable } = core;
    const list = { status: "", type: "", definition: "", window: "", search: "", page: 1, limit: 20 };
    let current = null; // the task on the task page, and its open dead letter
    let definitionsLoaded = false;

    // ---------------------------------------------------------------- toast and confirmation

    let toastTimer = null;
    function toast(text, kind) {
      const t = $("toast");
      t.textContent = text;
      t.className = "toast " + (kind || "");
      t.hidden = false;
      clearTimeout(toastTimer);
      toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
    }

    /* Resolves to {reason} when the person confirms, to null when they keep the task as it is. */
    function confirmAction(title, text, withReason) {
      $("confirm-title").textContent = title;
      $("confirm-text").textContent = text;
      $("confirm-reason-row").hidden = !withReason;
      $("confirm-reason").value = "";
      $("confirm").hidden = false;
      (withReason ? $("confirm-reason") : $("confirm-ok")).focus();
      return new Promise((resolve) => {
        const done = (value) => {
          $("confirm").hidden = true;
          $("confirm-ok").onclick = null;
          $("confirm-no").onclick = null;
          resolve(value);
        };
        $("confirm-ok").onclick = () => done({ reason: $("confirm-reason").value.trim() || null });
        $("confirm-no").onclick = () => done(null);
      });
    }

    // ---------------------------------------------------------------- task list

    function query() {
      const q = new URLSearchParams({ page: list.page, limit: list.limit });
      if (list.status) q.set("status", list.status);
      if (list.type) q.set("type", list.type);
      if (list.definition) q.set("taskDefinitionId", list.definition);
      if (list.window === "future") q.set("createdAfter", new Date().toISOString());
      else if (list.window) q.set("createdAfter", new Date(Date.now() - WINDOW_MS[list.window]).toISOString());
      if (list.search) q.set("search", list.search);
      return q.toString();
    }

    async function loadDefinitions() {
      if (definitionsLoaded) return;
      const r = await api("/tasks/definitions?limit=100");
      if (!r.ok) return; // a role without tasks:definitions:list still gets the other filters
      definitionsLoaded = true;
      $("l-definition").append(...r.data.items.map((d) => el("option", { value: d.id, text: d.id })));
    }

    async function tasks() {
      current = null;
      loadDefinitions();
      const r = await api("/tasks?" + query());
      if (!r.ok) { if (r.status !== 401) toast("Could not load tasks: " + errText(r.data), "bad"); return; }
      const { items, pagination: p } = r.data;
      fillTable("tasks-table", items, (t) => el("tr", { "data-task-id": t.id, "data-status": t.status },
        el("td", { text: fmt.time(t.createdAt) }), el("td", {}, taskLink(t.id)),
        el("td", { text: t.taskDefinitionId + " v" + t.definitionVersion }), el("td", { text: t.type }),
        el("td", {}, statusBadge(t.status)), el("td", { text: t.priority }),
        el("td", { class: "mono small", text: t.correlationId || "" }), el("td", { class: "num", text: t.retryCount }),
        el("td", { text: fmt.time(t.updatedAt) })));
      $("l-info").textContent = p.totalItems ? "page " + p.page + " of " + p.totalPages + " · " + p.totalItems + " tasks" : "";
      $("l-prev").disabled = p.page <= 1;
      $("l-next").disabled = p.page >= p.totalPages;
    }

    function setFilter(key, value) {
      list[key] = value;
      list.page = 1;
      tasks();
    }

    $("l-status").append(...STATUSES.map((s) => el("option", { value: s, text: s })));
    for (const [id, key] of [["l-status", "status"], ["l-type", "type"], ["l-definition", "definition"], ["l-window", "window"]]) {
      $(id).addEventListener("change", (e) => setFilter(key, e.target.value));
    }
    $("l-limit").addEventListener("change", (e) => setFilter("limit", Number(e.target.value)));
    let searchTimer = null;
    $("l-search").addEventListener("input", (e) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => setFilter("search", e.target.value.trim()), 300);
    });
    $("l-prev").addEventListener("click", () => { list.page = Math.max(1, list.page - 1); tasks(); });
    $("l-next").addEventListener("click", () => { list.page += 1; tasks(); });

    // ---------------------------------------------------------------- task page

    async function task(id) {
      const enc = encodeURIComponent(id);
      const [t, ev, logs] = await Promise.all([api("/tasks/" + enc), api("/tasks/" + enc + "/events"), api("/tasks/" + enc + "/logs")]);
      if (!t.ok) { $("t-title").textContent = "Task not available: " + errText(t.data); return; }
      const data = t.data, meta = data.executionMetadata || {};
      let letter = null;
      if (can("admin") && (data.status === "FAILED" || data.status === "TIMED_OUT")) {
        const dl = await api("/deadletters?resolved=false&taskId=" + enc);
        letter = dl.ok && dl.data.items.length ? dl.data.items[0] : null;
      }
      current = { task: data, letter };
      $("t-title").textContent = data.taskDefinitionId + " · v" + data.definitionVersion;
      $("t-id").textContent = data.id;
      $("t-status").className = "status " + data.status;
      $("t-status").textContent = data.status;
      $("btn-cancel").hidden = !(can("tasks:cancel") && !TERMINAL.includes(data.status));
      $("btn-retry").hidden = !(can("tasks:execute") && (data.status === "FAILED" || data.status === "TIMED_OUT"));
      $("btn-redrive").hidden = !letter;
      const facts = [["Type", data.type], ["Priority", data.priority], ["Retries", data.retryCount],
        ["Worker", meta.workerId], ["Started", fmt.time(meta.startTime)], ["Ended", fmt.time(meta.endTime)],
        ["Duration", meta.durationMs === undefined || meta.durationMs === null ? null
          : meta.durationMs < 1000 ? meta.durationMs + " ms" : fmt.dur(meta.durationMs / 1000)],
        ["Exit code", meta.exitCode], ["Peak memory", meta.peakMemoryBytes ? Math.round(meta.peakMemoryBytes / 1048576) + " MiB" : null],
        ["Assignee", data.assignee], ["Due", data.dueDate ? fmt.time(data.dueDate) : null],
        ["Correlation id", data.correlationId], ["Workflow", data.workflowInstanceId],
        ["Created", fmt.time(data.createdAt)], ["Updated", fmt.time(data.updatedAt)]];
      $("t-facts").replaceChildren(...facts.filter(([, v]) => v !== null && v !== undefined && v !== "")
        .map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: String(v) }))));
      $("t-input").textContent = JSON.stringify(data.input, null, 2);
      $("t-output").textContent = data.output === null || data.output === undefined ? "—" : JSON.stringify(data.output, null, 2);
      $("t-error-box").hidden = !data.error;
      $("t-error").textContent = data.error ? JSON.stringify(data.error, null, 2) : "";
      $("t-stdout").textContent = (logs.ok && logs.data.stdout) || "(empty)";
      $("t-stderr").textContent = (logs.ok && logs.data.stderr) || "(empty)";
      fillTable("events-table", ev.ok ? ev.data.items : [], (e) => el("tr", {},
        el("td", { text: fmt.time(e.createdAt) }), el("td", { class: "mono small", text: e.type }),
        el("td", {}, e.fromStatus ? statusBadge(e.fromStatus) : "", e.fromStatus || e.toStatus ? " → " : "", e.toStatus ? statusBadge(e.toStatus) : ""),
        el("td", { text: e.actor || "–" }),
        el("td", { class: "mono small", text: e.details ? JSON.stringify(e.details) : "" })));
    }

    async function act(title, text, withReason, path, body, done) {
      const answer = await confirmAction(title, text, withReason);
      if (!answer) return;
      const r = await api(path, { method: "POST", body: body ? body(answer) : undefined });
      if (r.ok) toast(done, "ok"); else toast(title + " failed: " + errText(r.data), "bad");
      if (current) task(current.task.id);
    }

    $("btn-cancel").addEventListener("click", () => current && act("Cancel this task?",
      "Task " + current.task.id + " (" + current.task.status + ") stops for good; a running container is killed.", true,
      "/tasks/" + encodeURIComponent(current.task.id) + "/cancel", (a) => ({ reason: a.reason }), "Task cancelled."));
    $("btn-retry").addEventListener("click", () => current && act("Retry this task?",
      "Task " + current.task.id + " runs again as a new attempt.", false,
      "/tasks/" + encodeURIComponent(current.task.id) + "/retry", null, "Task queued again."));
    $("btn-redrive").addEventListener("click", () => current && current.letter && act("Re-drive this dead letter?",
      "Task " + current.task.id + " gets a fresh attempt with its retry count reset.", false,
      "/deadletters/" + encodeURIComponent(current.letter.id) + "/redrive", null, "Dead letter re-driven."));

    // ---------------------------------------------------------------- dead letters

    async function deadletters() {
      current = null;
      const state_ = $("dl-state").value;
      const r = await api("/deadletters?limit=100" + (state_ ? "&resolved=" + state_ : ""));
      if (!r.ok) { if (r.status !== 401) toast("Could not load dead letters: " + errText(r.data), "bad"); return; }
      $("dl-count").textContent = r.data.pagination.totalItems;
      fillTable("dl-table", r.data.items, (d) => {
        const button = !d.redrivenAt && can("admin")
          ? el("button", { class: "primary small-btn", "data-dead-letter-id": d.id, text: "Re-drive" }) : "";
        if (button) button.addEventListener("click", () => act("Re-drive this dead letter?",
          "Task " + d.taskId + " gets a fresh attempt with its retry count reset.", false,
          "/deadletters/" + encodeURIComponent(d.id) + "/redrive", null, "Dead letter re-driven.").then(deadletters));
        return el("tr", { "data-dead-letter-id": d.id, "data-task-id": d.taskId },
          el("td", { text: fmt.time(d.createdAt) }), el("td", {}, taskLink(d.taskId)), el("td", { text: d.taskDefinitionId }),
          el("td", {}, el("span", { class: "code", text: (d.error && d.error.code) || "UNKNOWN" })),
          el("td", { class: "msg", text: (d.error && d.error.message) || "" }), el("td", {}, statusBadge(d.taskStatus)),
          el("td", { text: d.redrivenAt ? fmt.time(d.redrivenAt) + " by " + d.redrivenBy : "–" }), el("td", {}, button));
      });
    }
    $("dl-state").addEventListener("change", deadletters);

    return { tasks, task, deadletters };
  };
})();
