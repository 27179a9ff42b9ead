// canary-gateway's operator page. Everything goes through the admin API on this origin with
// the token kept in sessionStorage (sent as Authorization: Bearer, never in a URL or cookie).
// The DOM is built with textContent only: nothing the API returns is parsed as HTML.
"use strict";

const TOKEN_KEY = "canary-gateway-token";
const POLL_MS = 2000;
const state = {
  who: null, status: null, history: null, signatures: {}, timer: null, lookups: {},
  // Each action's last answer, by the place it is shown (next to the control that caused it).
  results: {},
  // The audit trail's filter and page: `before` is the cursor of the page shown (null: newest).
  audit: { route: "", rule: "", actor: "", before: null, newer: [] },
};

const $ = (id) => document.getElementById(id);

/** An element with attributes (`on*` functions become listeners) and children. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replace(container, ...children) {
  container.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** Calls the admin API; throws an Error with the API's own words when it refuses. */
async function api(method, path, body, token) {
  const headers = { Authorization: "Bearer " + (token || sessionStorage.getItem(TOKEN_KEY) || "") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.field = data && data.field;
    throw error;
  }
  return data;
}

/** Whether the token may make live changes (an operator's or an admin's): only then are the
 * change controls drawn. */
function isOperator() {
  return Boolean(state.who && (state.who.role === "operator" || state.who.role === "admin"));
}

/** Whether the token may write the configuration (an admin's). */
function isAdmin() {
  return Boolean(state.who && state.who.role === "admin");
}

/**
 * Shows an answer: next to the control that caused it when `key` names its place (see
 * `resultSlot`), else at the top of the page.
 */
function say(text, isError, key) {
  if (key) {
    state.results[key] = { text, isError: Boolean(isError) };
    const slot = document.getElementById(`result-${key}`);
    if (slot) fillResult(slot, state.results[key]);
    return;
  }
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

function fillResult(slot, result) {
  slot.textContent = result ? result.text : "";
  slot.className = "result" + (result && result.isError ? " error" : "");
}

/** The place beside a control where its answers appear; kept across re-renders. */
function resultSlot(key) {
  const slot = el("p", { id: `result-${key}`, role: "status", "aria-live": "polite" });
  fillResult(slot, state.results[key]);
  return slot;
}

/** A key usable in an element id. */
function slug(...parts) {
  return parts.join("-").replace(/[^A-Za-z0-9_-]/g, "_");
}

/** Runs a change; shows what the API answered either way (beside `key`'s control), then refreshes. */
async function act(what, method, path, body, key) {
  try {
    const answer = await api(method, path, body);
    say(`${what}: done (version ${answer.version ?? "-"})`, false, key);
  } catch (e) {
    say(`${what} refused: ${e.message}${e.field ? ` (field ${e.field})` : ""}`, true, key);
  }
  await refresh();
}

/** Asks for confirmation in a modal dialog; resolves true on Confirm. */
function confirmAction(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

// ---------------------------------------------------------------- login

function showLogin(error) {
  clearTimeout(state.timer);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("conn").textContent = "";
  $("login-view").hidden = false;
  $("login-error").textContent = error || "";
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  try {
    state.who = await api("GET", "/whoami", undefined, token);
  } catch (e) {
    $("login-error").textContent =
      e.status === 401 ? "That token was refused." : `Cannot reach the gateway: ${e.message}`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  start();
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.signatures = {};
  showLogin();
}

async function start() {
  $("login-view").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  if (!state.who) {
    try { state.who = await api("GET", "/whoami"); } catch (e) {
      if (e.status === 401) return showLogin("The stored token was refused; log in again.");
    }
  }
  showWho();
  await refresh();
}

function showWho() {
  if (state.who) {
    $("who").textContent = `${state.who.name} (${state.who.role})` +
      (state.who.role === "viewer" ? " — read only" : "");
  }
}

// ---------------------------------------------------------------- polling

async function refresh() {
  clearTimeout(state.timer);
  try {
    // Roles decide which controls are drawn: learn it again if the first try failed.
    if (!state.who) state.who = await api("GET", "/whoami");
    if ($("who").textContent === "") showWho();
    const [status, history, audit] = await Promise.all([
      api("GET", "/status"),
      api("GET", "/stats/history"),
      api("GET", auditPath()),
      fetchConfig(),
    ]);
    state.status = status;
    state.history = history;
    $("conn").textContent = "live";
    $("conn").className = "";
    render(status, history, audit);
  } catch (e) {
    if (e.status === 401) return showLogin("The token was refused; log in again.");
    // The gateway may be restarting: keep trying.
    $("conn").textContent = "reconnecting…";
    $("conn").className = "down";
  }
  state.timer = setTimeout(refresh, POLL_MS);
}

/**
 * Re-renders a section when what it shows changed. The control that has focus keeps it, with
 * what was typed into it, so a poll never takes a half-typed value away.
 */
function renderIfChanged(name, container, data, build) {
  const signature = JSON.stringify(data);
  if (state.signatures[name] === signature) return;
  state.signatures[name] = signature;
  const active = document.activeElement;
  const keep = active && active.id && container.contains(active)
    ? { id: active.id, value: active.value, typed: active.matches("input, textarea") }
    : null;
  build();
  if (!keep) return;
  const again = document.getElementById(keep.id);
  if (!again) return;
  if (keep.typed) again.value = keep.value;
  again.focus();
}

function render(status, history, audit) {
  renderBanners(status);
  renderOverview(status, history);
  const rulesData = { routes: status.routes, mode: status.global_mode, groups: status.groups.map((g) => g.name), operator: isOperator() };
  renderIfChanged("rules", $("rules"), rulesData, () => renderRules(status));
  renderConfig(status);
  renderPlans(status);
  renderIfChanged("audit-routes", $("audit-route"), status.routes.map((r) => r.name), () => auditRoutes(status));
  renderIfChanged("audit", $("audit-body"), audit, () => renderAudit(audit));
}

/** What the operator must know before acting: changes that a restart loses, plans held. */
function renderBanners(status) {
  const banners = [];
  if (!status.state_file && !status.store) {
    banners.push(el("p", { class: "banner warn", id: "banner-not-kept", text:
      "Changes are not kept: this gateway has no state file (gateway.admin.state_file) and no store, " +
      "so a restart undoes every change made here and forgets the audit trail." }));
  }
  const held = (status.plans || []).filter((p) => p.state === "held");
  if (held.length) {
    banners.push(el("p", { class: "banner warn", id: "banner-held", text:
      `A rollback or promote holds ${held.length} plan${held.length === 1 ? "" : "s"} ` +
      `(${held.map((p) => `${p.route}/${p.rule}`).join(", ")}): their step clocks are stopped. ` +
      "Resuming the rules releases them, each with its step's clock restarted and its figures reset." }));
  }
  renderIfChanged("banners", $("banners"), banners.map((b) => b.textContent), () => replace($("banners"), banners));
}

// ---------------------------------------------------------------- overview

function renderOverview(status, history) {
  const store = status.store;
  const reload = status.last_reload;
  const meta = [
    ["Configuration", `${status.config_file} (live state #${status.generation}: one more at each reload or change)`],
    ["Control state", `version ${status.control.version} (` +
      ({ store: "shared through the store", file: "from the state file: the store has not answered yet", local: "this node only: no store" }[status.control.source] || status.control.source) + ")" +
      (status.control.plan_leader ? ", this node drives plans" : "")],
    ["Global mode", modeText(status.global_mode)],
    ["Last reload", reload ? (reload.ok ? `ok at ${reload.at}` : `FAILED at ${reload.at}: ${reload.error}`) : "none since start"],
    ["Store", store ? `${store.redis} — ${store.connected ? "connected" : "NOT connected"}` +
      store.sets.map((s) => `; set ${s.set}: ${s.members} users` +
        (s.stale_seconds ? `, ${Math.round(s.stale_seconds)} s stale` : "")).join("") : "none (changes apply to this node only)"],
  ];
  for (const c of status.certificates || []) {
    meta.push(["Certificate", `${c.names.join(", ")} on ${c.listener}${c.default ? " (default)" : ""}: ` +
      `${c.key_type}, expires ${c.not_after} (${c.days_left} days)` + (c.warning ? ` — ${c.warning.toUpperCase()}` : "")]);
  }
  if (status.overlay_warnings && status.overlay_warnings.length) {
    meta.push(["Warnings", status.overlay_warnings.join("; ")]);
  }
  replace($("overview-meta"), meta.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));

  const groups = el("div", { id: "groups-list" });
  for (const g of status.groups) {
    const series = (history.series || []).filter((s) => s.group === g.name);
    groups.append(el("div", { class: "card group", "data-group": g.name },
      el("h3", { text: `Group ${g.name}` }),
      el("p", { class: "note", text: `${g.selection}` + (g.fallback ? `, falls back to ${g.fallback}` : "") }),
      el("ul", {}, g.servers.map((s) => el("li", {},
        `${s.addr} (weight ${s.weight}) `,
        el("span", { class: s.healthy ? "healthy" : "unhealthy", text: s.healthy ? "healthy" : "unhealthy" })))),
      series.map((s) => charts(s, history.bucket_seconds))));
  }
  replace($("overview-groups"), groups);

  const routes = status.routes.map((r) => el("li", {},
    el("strong", { text: r.name }), ` — hosts ${r.hosts.length ? r.hosts.join(", ") : "any"}, ` +
    `paths ${r.paths.join(", ")}, default ${r.default_group}, mode ${modeText(r.mode)}`));
  replace($("overview-routes"), el("h3", { text: "Routes" }), el("ul", { id: "routes-list" }, routes));
}

function modeText(mode) {
  if (typeof mode === "string") return mode;
  if (mode && mode.promote) return `promote ${mode.promote}`;
  return JSON.stringify(mode);
}

// ---------------------------------------------------------------- explain

/** A decision's reason in words, with the code that logs and headers use. */
function reasonText(code) {
  const words = {
    header: "the QA header named the group",
    user_list: "the user id is on the rule's list",
    percent: "the user id hashes into the rule's percentage",
    condition: "every condition of the rule held",
    default: "no rule matched: the route's default group",
    anonymous: "no valid user id and no header rule matched: the default group",
    rollback: "a rollback sends everyone to the default group",
    promote: "a promote sends everyone to one group",
    no_route: "no route serves this host and path",
  }[code];
  return words ? `${words} (${code})` : String(code);
}

async function explain(event) {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const name of ["user", "host", "path", "header", "method", "client"]) {
    const value = $(`explain-${name}`).value.trim();
    if (value) params.set(name, value);
  }
  // Headers as `Name: value; Name: value`, cookies as a Cookie header, query as a query string.
  for (const entry of $("explain-headers").value.split(";")) {
    const colon = entry.indexOf(":");
    if (colon > 0) params.append(`header.${entry.slice(0, colon).trim()}`, entry.slice(colon + 1).trim());
  }
  for (const entry of $("explain-cookies").value.split(";")) {
    const eq = entry.indexOf("=");
    if (eq > 0) params.append(`cookie.${entry.slice(0, eq).trim()}`, entry.slice(eq + 1).trim());
  }
  for (const [name, value] of new URLSearchParams($("explain-query").value.trim().replace(/^\?/, ""))) {
    params.append(`query.${name}`, value);
  }
  try {
    const e = await api("GET", `/explain?${params}`);
    const rows = [
      ["Route", e.route ?? "none (404)"],
      ["Group", e.group ?? "-"],
      ["Rule", e.rule ?? "none: the route's default group"],
      ["Reason", reasonText(e.reason)],
      ["User id", e.user ? `${e.user}${e.user_valid ? "" : " (not a valid id: anonymous)"}` : "none (anonymous)"],
      ["Identity source", e.identity ?? "none"],
      ["Served by now", e.served_by ? `${e.served_by}${e.served_by !== e.group ? " (fallback)" : ""}` : "nothing can serve"],
      ["Group healthy", e.group_healthy ? "yes" : "no"],
    ];
    // A QA header value that decided nothing is said, not silently passed over.
    const header = params.get("header");
    if (header && e.reason !== "header") {
      const groups = ((state.status && state.status.groups) || []).map((g) => g.name);
      rows.push(["QA header", groups.length && !groups.includes(header)
        ? `"${header}" names no group (groups: ${groups.join(", ")}): the header rules passed it over`
        : `"${header}" did not decide (an override, a header rule's secret or an earlier rule came first)`]);
    }
    // Each rule in order: where it would send the request, and each condition's result.
    const ruleRows = (e.rules || []).flatMap((r) => [
      el("dt", { text: `Rule ${r.rule}` }),
      el("dd", { "data-explain-rule": r.rule, "data-takes": r.takes ?? "" },
        r.takes ? `would send it to ${r.takes}` : "passes it on",
        r.conditions.length ? el("ul", { class: "conditions" }, r.conditions.map((c) =>
          el("li", { "data-holds": String(c.holds), text: `${c.holds ? "✓ holds" : "✗ fails"}: ${c.condition}` }))) : null),
    ]);
    replace($("explain-result"), rows.flatMap(([k, v]) => [el("dt", { text: k }),
      el("dd", { "data-field": k.toLowerCase().replace(/ /g, "-"), "data-code": k === "Reason" ? e.reason : null, text: String(v) })]), ruleRows);
  } catch (err) {
    replace($("explain-result"), el("dt", { text: "Refused" }), el("dd", { class: "error", text: err.message }));
  }
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("explain-form").addEventListener("submit", explain);
  $("audit-filter").addEventListener("submit", filterAudit);
  $("audit-newest").addEventListener("click", () => {
    state.audit.before = null;
    state.audit.newer = [];
    refresh();
  });
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else showLogin();
});
