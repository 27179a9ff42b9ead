// The operator page's audit trail. Runs after app.js (deferred scripts run in order) and
// uses its helpers; the DOM is built with textContent only.
"use strict";

// ---------------------------------------------------------------- audit

/** `GET /audit` with the filter and page the operator chose. */
function auditPath() {
  const q = new URLSearchParams({ limit: "50" });
  for (const name of ["route", "rule", "actor"]) {
    if (state.audit[name]) q.set(name, state.audit[name]);
  }
  if (state.audit.before != null) q.set("before", String(state.audit.before));
  return `/audit?${q}`;
}

function auditRoutes(status) {
  const select = $("audit-route");
  const chosen = state.audit.route;
  replace(select, el("option", { value: "", text: "any" }),
    status.routes.map((r) => el("option", { value: r.name, text: r.name, selected: r.name === chosen })));
}

/** A time as the operator's clock shows it, with its zone: `2026-12-06 21:41:16 CET`. */
function localTime(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  const zone = (new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(d)
    .find((part) => part.type === "timeZoneName") || {}).value || "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone}`.trim();
}

/** An action as words: `plan_advance` → `plan advance`. */
function actionText(action) {
  return String(action).replace(/_/g, " ");
}

function renderAudit(audit) {
  const filtered = ["route", "rule", "actor"].filter((k) => state.audit[k]).map((k) => `${k} ${state.audit[k]}`);
  $("audit-source").textContent = (audit.source === "store"
    ? "Every node's changes, from the store."
    : "This node's changes" + (audit.store_error ? ` (the store did not answer: ${audit.store_error})` : ".")) +
    (filtered.length ? ` Only ${filtered.join(", ")}.` : "");
  replace($("audit-body"), audit.entries.length ? audit.entries.map((e) => el("tr", {},
    el("td", { class: "when", text: localTime(e.at_ms) }),
    el("td", { text: e.actor }),
    el("td", { text: e.route || "all" }),
    el("td", { text: e.rule || "" }),
    el("td", { text: actionText(e.action) }),
    el("td", { "data-field": "before", text: e.before ?? "" }),
    el("td", { "data-field": "after", text: e.after ?? "" }),
    el("td", { text: e.detail + (e.figures ? ` — canary ${figuresText(e.figures.canary)}; baseline ${figuresText(e.figures.baseline)}` : "") }),
    el("td", { text: String(e.version) })))
    : el("tr", {}, el("td", { colspan: "9", class: "note", text: "No change matches." })));
  const older = $("audit-older");
  older.disabled = !audit.more;
  older.onclick = () => {
    state.audit.newer.push(state.audit.before);
    state.audit.before = audit.next_before;
    refresh();
  };
  $("audit-newest").disabled = state.audit.before == null;
  const page = state.audit.newer.length + 1;
  $("audit-page").textContent = `page ${page}` + (audit.more ? ", older entries follow" : ", the oldest kept");
}

function filterAudit(event) {
  event.preventDefault();
  state.audit.route = $("audit-route").value;
  state.audit.rule = $("audit-rule").value.trim();
  state.audit.actor = $("audit-actor").value.trim();
  state.audit.before = null;
  state.audit.newer = [];
  refresh();
}
