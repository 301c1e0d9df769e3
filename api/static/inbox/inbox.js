/* taskexec web inbox: sign in with a token, list my tasks, open one, claim it, fill its form, complete it. */
(function () {
  "use strict";
  const API = "/api/v1";
  const KEY = "taskexec.inbox.token";
  const LIMIT = 20;
  const $ = (id) => document.getElementById(id);
  const state = { token: sessionStorage.getItem(KEY) || "", page: 1, current: null, schema: null };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(decodeURIComponent(escape(atob(part))));
    } catch (e) { return null; }
  }

  async function api(method, path, body) {
    const opts = { method, headers: { Authorization: "Bearer " + state.token } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(API + path, opts);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401) { signOut("Your token was refused: " + errText(data)); }
    return { status: resp.status, ok: resp.ok, data };
  }

  function errText(data) {
    return (data && data.error && data.error.message) || "unexpected error";
  }

  let toastTimer = null;
  function toast(text, kind) {
    const m = $("message");
    m.textContent = text;
    m.className = "toast " + (kind || "");
    m.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { m.hidden = true; }, 4000);
  }

  function when(iso) {
    if (!iso) return { text: "no deadline", overdue: false };
    const d = new Date(iso);
    const mins = Math.round((d - Date.now()) / 60000);
    const abs = Math.abs(mins);
    const span = abs < 60 ? abs + " min" : abs < 2880 ? Math.round(abs / 60) + " h" : Math.round(abs / 1440) + " d";
    return { text: (mins < 0 ? "overdue by " : "due in ") + span, overdue: mins < 0, full: d.toLocaleString() };
  }

  // ------------------------------------------------------------------ sign in / out

  function signIn(token) {
    const c = claims(token);
    if (!c || !c.sub) { $("signin-error").textContent = "That does not look like a JWT."; return; }
    state.token = token;
    sessionStorage.setItem(KEY, token);
    $("signin-error").textContent = "";
    $("who-name").textContent = c.sub;
    $("who-roles").textContent = (c.roles || []).length ? "(" + c.roles.join(", ") + ")" : "";
    $("whoami").hidden = false;
    $("signin-panel").hidden = true;
    $("app").hidden = false;
    loadInbox();
  }

  function signOut(reason) {
    state.token = "";
    sessionStorage.removeItem(KEY);
    $("whoami").hidden = true;
    $("app").hidden = true;
    $("signin-panel").hidden = false;
    $("signin-error").textContent = reason || "";
  }

  // ------------------------------------------------------------------ inbox list

  async function loadInbox() {
    const r = await api("GET", "/inbox?page=" + state.page + "&limit=" + LIMIT);
    if (!r.ok) { if (r.status !== 401) toast("Could not load the inbox: " + errText(r.data), "bad"); return; }
    const list = $("inbox-list");
    list.replaceChildren();
    const { items, pagination } = r.data;
    for (const t of items) {
      const due = when(t.dueDate);
      const li = el("li", { "data-task-id": t.id, class: state.current === t.id ? "active" : "" },
        el("div", { class: "t-name", text: t.taskName || t.taskDefinitionId }),
        el("div", { class: "t-meta" },
          el("span", { class: "badge " + t.priority, text: t.priority }),
          el("span", { class: due.overdue ? "overdue" : "", title: due.full || "", text: due.text }),
          el("span", { class: "tag" + (t.claimed ? " mine" : ""),
            text: t.claimed ? "yours" : "offered to " + (t.candidateRoles || []).join(", ") })));
      li.addEventListener("click", () => openTask(t.id));
      list.append(li);
    }
    $("count").textContent = pagination.totalItems;
    $("empty").hidden = items.length > 0;
    $("page-info").textContent = pagination.totalPages ? "page " + pagination.page + " of " + pagination.totalPages : "";
    $("prev").disabled = pagination.page <= 1;
    $("next").disabled = pagination.page >= pagination.totalPages;
  }

  // ------------------------------------------------------------------ one task

  async function openTask(id) {
    const r = await api("GET", "/inbox/" + encodeURIComponent(id));
    if (!r.ok) { toast("Could not open the task: " + errText(r.data), "bad"); return; }
    const t = r.data;
    state.current = t.id;
    for (const li of $("inbox-list").children) li.classList.toggle("active", li.dataset.taskId === t.id);
    $("detail-empty").hidden = true;
    $("detail-body").hidden = false;
    $("d-name").textContent = t.taskName;
    $("d-desc").textContent = t.description || "";
    $("d-priority").textContent = t.priority;
    $("d-priority").className = "badge " + t.priority;
    $("d-status").textContent = t.status;
    $("d-assignee").textContent = t.assignee || "unclaimed (offered to " + (t.candidateRoles || []).join(", ") + ")";
    const due = when(t.dueDate);
    $("d-due").textContent = t.dueDate ? due.full + " (" + due.text + ")" : "no deadline";
    $("d-id").textContent = t.id;
    const kv = $("d-input");
    kv.replaceChildren();
    const input = t.input && typeof t.input === "object" && !Array.isArray(t.input) ? t.input : { value: t.input };
    for (const [k, v] of Object.entries(input)) {
      kv.append(el("dt", { text: k }), el("dd", { text: typeof v === "string" ? v : JSON.stringify(v, null, 2) }));
    }
    $("claim-box").hidden = t.claimed;
    buildForm(t.formSchema || t.outputSchema || {}, !t.claimed);
  }

  // String formats: the browser's own input where it yields the JSON Schema form, a hint otherwise.
  const INPUT_TYPES = { date: "date", email: "email", uri: "url" };
  const PLACEHOLDERS = { "date-time": "2024-05-01T09:30:00Z", time: "09:30:00Z", uuid: "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" };

  /* `format` problems found before sending, worded as the server words them (formats.js). */
  function formatErrors(output) {
    const out = [];
    for (const control of $("fields").querySelectorAll("[data-format]")) {
      const msg = output[control.name] === undefined ? null : window.TaskexecFormats.check(control.dataset.format, output[control.name]);
      if (msg) out.push({ field: "output." + control.name, message: msg });
    }
    return out;
  }

  function fieldKind(prop) {
    if (Array.isArray(prop.enum)) return "enum";
    const type = Array.isArray(prop.type) ? prop.type.find((x) => x !== "null") : prop.type;
    if (["string", "number", "integer", "boolean"].includes(type)) return type;
    return "json";
  }

  // PostgreSQL's JSONB does not keep object key order, so the order comes from `x-order` (a list of
  // property names) when the schema has one, else required fields in `required` order, then the rest by name.
  function fieldOrder(schema) {
    const props = Object.keys((schema && schema.properties) || {});
    const wanted = [...((schema && schema["x-order"]) || []), ...((schema && schema.required) || []), ...props.sort()];
    return [...new Set(wanted)].filter((name) => props.includes(name));
  }

  function buildForm(schema, locked) {
    state.schema = schema;
    const box = $("fields");
    box.replaceChildren();
    $("form-errors").replaceChildren();
    const props = (schema && schema.properties) || {};
    const required = new Set((schema && schema.required) || []);
    for (const name of fieldOrder(schema)) {
      const prop = props[name];
      const id = "f-" + name;
      const kind = fieldKind(prop);
      const label = prop.title || name;
      const wrap = el("div", { class: "field", "data-field": name });
      let control;
      if (kind === "boolean") {
        control = el("input", { type: "checkbox", id, name, checked: prop.default === true });
        wrap.append(el("label", { class: "check", for: id }, control, label));
      } else {
        if (kind === "enum") {
          control = el("select", { id, name }, el("option", { value: "", text: "— choose —" }));
          for (const v of prop.enum) control.append(el("option", { value: JSON.stringify(v), text: String(v) }));
          if (prop.default !== undefined) control.value = JSON.stringify(prop.default);
        } else if (kind === "json" || prop.format === "textarea" || (prop.maxLength || 0) > 200) {
          control = el("textarea", { id, name, rows: kind === "json" ? 4 : 3 });
          if (prop.default !== undefined) control.value = kind === "json" ? JSON.stringify(prop.default) : prop.default;
        } else {
          const type = kind === "number" || kind === "integer" ? "number" : INPUT_TYPES[prop.format] || "text";
          control = el("input", { id, name, type, step: kind === "integer" ? "1" : kind === "number" ? "any" : null,
            placeholder: PLACEHOLDERS[prop.format] || null });
          if (prop.default !== undefined) control.value = prop.default;
          if (kind === "string" && prop.format) control.dataset.format = prop.format;
        }
        wrap.append(el("label", { for: id }, label, required.has(name) ? el("span", { class: "req", text: " *" }) : ""),
          control);
      }
      control.dataset.kind = kind;
      control.disabled = locked;
      if (prop.description) wrap.append(el("div", { class: "hint", text: prop.description }));
      wrap.append(el("div", { class: "field-error", "data-error-for": name }));
      box.append(wrap);
    }
    if (!Object.keys(props).length) box.append(el("p", { class: "muted", text: "No fields: just complete the task." }));
    $("submit").disabled = locked;
  }

  function collect() {
    const out = {};
    for (const control of $("fields").querySelectorAll("input, select, textarea")) {
      const kind = control.dataset.kind;
      const name = control.name;
      if (kind === "boolean") { out[name] = control.checked; continue; }
      const raw = control.value;
      if (raw === "") continue; // omitted: the schema decides whether that is allowed
      if (kind === "enum") out[name] = JSON.parse(raw);
      else if (kind === "integer" || kind === "number") out[name] = Number(raw);
      else if (kind === "json") { try { out[name] = JSON.parse(raw); } catch (e) { out[name] = raw; } }
      else out[name] = raw;
    }
    return out;
  }

  function showErrors(details) {
    for (const node of document.querySelectorAll(".field")) node.classList.remove("invalid");
    for (const node of document.querySelectorAll(".field-error")) node.textContent = "";
    const general = $("form-errors");
    general.replaceChildren();
    for (const d of details || []) {
      const m = /^output\.([^.\[]+)/.exec(d.field || "");
      const slot = m && document.querySelector('.field-error[data-error-for="' + CSS.escape(m[1]) + '"]');
      if (slot) {
        slot.textContent = d.message;
        slot.parentElement.classList.add("invalid");
      } else {
        general.append(el("li", { text: (d.field ? d.field + ": " : "") + d.message }));
      }
    }
  }

  async function claim() {
    const r = await api("POST", "/tasks/" + encodeURIComponent(state.current) + "/claim");
    if (r.ok) { toast("Claimed. It is yours now.", "ok"); await openTask(state.current); loadInbox(); }
    else toast("Could not claim: " + errText(r.data), "bad");
  }

  async function submit(ev) {
    ev.preventDefault();
    const output = collect();
    const problems = formatErrors(output);
    if (problems.length) {
      showErrors(problems);
      toast("Please fix the highlighted fields.", "bad");
      return;
    }
    const r = await api("POST", "/tasks/" + encodeURIComponent(state.current) + "/complete", { output });
    if (r.ok) {
      showErrors([]);
      toast("Task completed. Thank you!", "ok");
      state.current = null;
      $("detail-body").hidden = true;
      $("detail-empty").hidden = false;
      $("detail-empty").textContent = "Completed. Choose the next task on the left.";
      loadInbox();
    } else if (r.status === 422 || r.status === 400) {
      showErrors((r.data && r.data.error && r.data.error.details) || [{ message: errText(r.data) }]);
      toast("Please fix the highlighted fields.", "bad");
    } else {
      toast("Could not complete: " + errText(r.data), "bad");
    }
  }

  // ------------------------------------------------------------------ wiring

  $("signin").addEventListener("click", () => signIn($("token").value.trim()));
  $("signout").addEventListener("click", () => signOut(""));
  $("refresh").addEventListener("click", loadInbox);
  $("prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); loadInbox(); });
  $("next").addEventListener("click", () => { state.page += 1; loadInbox(); });
  $("claim").addEventListener("click", claim);
  $("task-form").addEventListener("submit", submit);
  if (state.token) signIn(state.token);
})();
