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

/** Whether the token is an operator's: only then are the change controls drawn. */
function isOperator() {
  return Boolean(state.who && state.who.role === "operator");
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

/**
 * Small charts of one route and group over the last hour: request rate, error share, p50/p99.
 * Time runs left to right from the oldest bucket to now; a bucket without requests has no
 * error share or latency, so those lines break there (a gap, not a 0).
 */
function charts(series, bucketSeconds) {
  const points = series.points.concat(series.live.seconds > 0 ? [series.live] : []);
  const times = points.map((p) => p.start_ms + 500 * p.seconds);
  const now = Date.now();
  const domain = [Math.min(points.length ? points[0].start_ms : now, now - 60 * 1000), now];
  const rate = points.map((p) => (p.seconds > 0 ? p.requests / p.seconds : 0));
  const errors = points.map((p) => (p.requests ? (100 * p.errors) / p.requests : null));
  const p50 = points.map((p) => (p.requests && p.p50_ms != null ? p.p50_ms : null));
  const p99 = points.map((p) => (p.requests && p.p99_ms != null ? p.p99_ms : null));
  const last = (xs) => { const v = xs.filter((x) => x != null); return v.length ? v[v.length - 1] : null; };
  const now1 = (v, digits) => (v == null ? "idle" : v.toFixed(digits));
  const gap = 1500 * bucketSeconds;
  return el("div", { class: "charts", "aria-label": `route ${series.route}, last hour in ${bucketSeconds}-second buckets` },
    chart(`route ${series.route}: requests/s, now ${last(rate) == null ? "0.0" : last(rate).toFixed(1)}`,
      { times, gap, domain, lines: [rate], colors: ["#0969da"], names: ["requests/s"] }),
    chart(`errors %, now ${now1(last(errors), 2)}`,
      { times, gap, domain, lines: [errors], colors: ["#cf222e"], names: ["errors %"] }),
    chart(`p50 / p99 ms, now ${now1(last(p50), 1)} / ${now1(last(p99), 1)}`,
      { times, gap, domain, lines: [p50, p99], colors: ["#1a7f37", "#9a6700"], names: ["p50 ms", "p99 ms"] }));
}

/** 1, 2 or 5 times a power of ten, at least `v`: the top of a chart's scale. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= v);
}

function hourMinute(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** One chart: a time axis (oldest bucket … now), a value axis from 0, a legend. */
function chart(title, { times, gap, domain, lines, colors, names }) {
  const width = 260, height = 96, left = 34, right = 6, top = 14, bottom = 16;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const [t0, t1] = domain;
  const x = (ms) => left + ((ms - t0) / Math.max(1, t1 - t0)) * (width - left - right);
  const max = niceMax(Math.max(0, ...lines.flat().filter((v) => v != null)));
  const y = (v) => height - bottom - (v / max) * (height - top - bottom);
  const axis = { stroke: "#8c959f", "stroke-width": "1" };
  add("line", { x1: left, y1: top, x2: left, y2: height - bottom, ...axis });
  add("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, ...axis });
  const label = (lx, ly, anchor, text) => add("text", { x: lx, y: ly, "text-anchor": anchor, "font-size": "9", fill: "#59636e" }, text);
  label(left - 3, top + 3, "end", String(max));
  label(left - 3, height - bottom, "end", "0");
  label(left, height - 3, "start", hourMinute(t0));
  label(width - right, height - 3, "end", `${hourMinute(t1)} now`);
  // The legend, top right.
  let lx = width - right;
  for (let i = names.length - 1; i >= 0; i--) {
    const text = label(lx, 9, "end", names[i]);
    text.setAttribute("fill", colors[i]);
    lx -= 6 * names[i].length + 14;
  }
  lines.forEach((values, i) => {
    // Segments of consecutive buckets with a value; a missing value or a hole in time breaks.
    const segments = [];
    let current = [];
    values.forEach((v, k) => {
      const broken = v == null || (k > 0 && times[k] - times[k - 1] > gap);
      if (broken && current.length) { segments.push(current); current = []; }
      if (v != null) current.push([x(times[k]), y(v)]);
    });
    if (current.length) segments.push(current);
    for (const segment of segments) {
      if (segment.length === 1) {
        add("circle", { cx: segment[0][0].toFixed(1), cy: segment[0][1].toFixed(1), r: "1.5", fill: colors[i] });
        continue;
      }
      add("polyline", { fill: "none", stroke: colors[i], "stroke-width": "1.5",
        points: segment.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ") });
    }
  });
  return el("div", { class: "chart" }, el("span", { text: title }), svg);
}

// ---------------------------------------------------------------- rules

/** The API path of a rule, or of a route's action. */
function routePath(status, route, rest) {
  return status.routes.length === 1 ? `/${rest}` : `/routes/${encodeURIComponent(route)}/${rest}`;
}

/**
 * Share of the requests served by groups other than `group` (on `route`, if given): in the
 * last minute, which is what a change moves now, and over the last hour.
 */
function shareElsewhere(group, route) {
  const series = ((state.history && state.history.series) || []).filter((s) => !route || s.route === route);
  const since = Date.now() - 60 * 1000;
  const share = (keep) => {
    let total = 0, other = 0;
    for (const s of series) {
      for (const p of s.points.concat([s.live]).filter(keep)) {
        total += p.requests;
        if (s.group !== group) other += p.requests;
      }
    }
    return [total, total ? (100 * other / total).toFixed(1) : "0"];
  };
  const [minute, minuteShare] = share((p) => p.start_ms + 1000 * p.seconds > since);
  const [hour, hourShare] = share(() => true);
  if (!hour) return "no requests seen in the last hour";
  return (minute ? `${minuteShare}% of the last minute's ${minute} requests` : "no requests in the last minute") +
    `, ${hourShare}% of the last hour's ${hour}`;
}

function renderRules(status) {
  const groups = status.groups.map((g) => g.name);
  const operator = isOperator();
  const heldBy = (route) => (status.plans || []).filter((p) => p.state === "held" && (!route || p.route === route)).length;
  replace($("global-actions"),
    el("span", { text: `Every route (global mode: ${modeText(status.global_mode)})` + (operator ? ":" : ".") }),
    operator ? [
      el("button", { type: "button", class: "danger", id: "global-rollback", onclick: async () => {
        const text = "Roll back every route: every user of every route goes to its route's default group at once " +
          `(${status.routes.map((r) => `${r.name} → ${r.default_group}`).join(", ")}; now served elsewhere: ` +
          `${status.routes.map((r) => `${r.name}: ${shareElsewhere(r.default_group, r.name)}`).join("; ")}). ` +
          "Rules stay off until you resume, and every running plan is held.";
        if (await confirmAction(text)) act("Rollback", "POST", "/rollback", undefined, "global");
      } }, "Roll back everything"),
      promoteControl(groups, "global", "/promote", "every user of every route"),
      el("button", { type: "button", id: "global-resume", onclick: async () => {
        const held = heldBy();
        if (await confirmAction("Resume the rules on every route: users go back to what their rules decide." +
          (held ? ` ${held} held plan(s) run again, each with its step's clock restarted.` : ""))) {
          act("Resume", "POST", "/resume", undefined, "global");
        }
      } }, "Resume rules everywhere"),
      resultSlot("global")] : null);

  replace($("rules-body"), status.routes.map((route) => el("div", { class: "card route", "data-route": route.name },
    el("h3", { text: `Route ${route.name}` }),
    el("p", { class: "note", text: `cookie ${route.cookie}; default group ${route.default_group}; mode ${modeText(route.mode)} (from ${route.mode_source})` }),
    operator ? [el("div", { class: "actions" },
      el("button", { type: "button", class: "danger", id: slug("route-rollback", route.name), onclick: async () => {
        const text = `Roll back route ${route.name}: every user of this route goes to ${route.default_group} at once ` +
          `(now served elsewhere: ${shareElsewhere(route.default_group, route.name)}). Its running plans are held.`;
        if (await confirmAction(text)) act(`Rollback of ${route.name}`, "POST", `/routes/${encodeURIComponent(route.name)}/rollback`, undefined, slug("route", route.name));
      } }, `Roll back ${route.name}`),
      promoteControl(groups, route.name, `/routes/${encodeURIComponent(route.name)}/promote`, `every user of route ${route.name}`, slug("route", route.name)),
      el("button", { type: "button", onclick: async () => {
        if (await confirmAction(`Resume the rules of route ${route.name}.`)) act(`Resume of ${route.name}`, "POST", `/routes/${encodeURIComponent(route.name)}/resume`, undefined, slug("route", route.name));
      } }, `Resume ${route.name}`)),
    resultSlot(slug("route", route.name))] : null,
    el("ol", { class: "rules" }, route.rules.map((rule) => el("li", { class: "rule", "data-rule": rule.name },
      ruleView(status, route, rule)))))));
}

function promoteControl(groups, key, path, who, resultKey) {
  const id = `promote-${key}`;
  const select = el("select", { id }, groups.map((g) => el("option", { value: g, text: g })));
  return el("span", { class: "promote" },
    el("label", { for: id, text: "Send everyone to" }), select,
    el("button", { type: "button", onclick: async () => {
      const group = select.value;
      if (await confirmAction(`Promote ${group}: ${who} goes to ${group} at once, whatever the rules say.`)) {
        act(`Promote ${group}`, "POST", path, { group }, resultKey || "global");
      }
    } }, "Promote"));
}

/** A plan that owns its rule's percentage: running, paused or held (or `null`). */
function owningPlan(rule) {
  return ["running", "paused", "held"].includes(rule.plan) ? rule.plan : null;
}

function ruleView(status, route, rule) {
  const head = el("strong", { text: rule.name });
  const id = (what) => slug(what, route.name, rule.name);
  const operator = isOperator();
  if (rule.kind === "header") {
    return [head, ` — header ${rule.header} names the group` + (rule.needs_secret ? " (with its secret)" : "")];
  }
  if (rule.kind === "percent") {
    const owner = owningPlan(rule);
    const planNote = owner ? ` Driven by its rollout plan (${owner}): abort the plan to set it by hand.` : "";
    const line = [head, ` — ${rule.percent}% of users to ${rule.group} (seed ${rule.seed}; set by ${rule.percent_source}${rule.percent_set_by ? `: ${rule.percent_set_by}` : ""}).${planNote}`];
    if (!operator) return line;
    const input = el("input", { id: id("percent"), type: "number", min: "0", max: "100", step: "any", value: String(rule.percent), "aria-describedby": id("percent-note"), disabled: Boolean(owner) });
    return [...line,
      el("form", { class: "inline", onsubmit: async (event) => {
        event.preventDefault();
        const key = id("percent");
        const next = Number(input.value);
        if (input.value === "" || !(next >= 0 && next <= 100)) { say(`Percent for ${rule.name}: ${input.value} is not in 0..100`, true, key); return; }
        const change = next >= rule.percent
          ? `users already in stay in, and about ${(next - rule.percent).toFixed(2)}% more of all users move to ${rule.group}`
          : `about ${(rule.percent - next).toFixed(2)}% of all users leave ${rule.group} (the rest of those in stay in)`;
        if (await confirmAction(`Set ${rule.name} from ${rule.percent}% to ${next}% of users: ${change}.`)) {
          act(`Percent of ${rule.name}`, "PUT", routePath(status, route.name, `rules/${encodeURIComponent(rule.name)}/percent`), { percent: next }, key);
        }
      } },
        el("label", { for: id("percent"), text: "New percent" }), input,
        el("button", { type: "submit", id: id("percent-set"), disabled: Boolean(owner) }, "Set percent"),
        el("span", { id: id("percent-note"), class: "note", text: owner
          ? `Its rollout plan (${owner}) sets it: abort the plan to set it by hand.`
          : "A stable hash: raising the share only adds users." })),
      resultSlot(id("percent"))];
  }
  // A users list.
  const lookup = el("input", { id: id("lookup"), autocomplete: "off" });
  // Kept in the page's state, so a re-render (a poll after a change) does not lose it.
  const answerId = id("answer");
  const answer = el("span", { id: answerId, class: "note", "aria-live": "polite", text: (state.lookups[answerId] || {}).text || "" });
  const show = (user, text) => {
    state.lookups[answerId] = { user, text };
    const current = document.getElementById(answerId);
    if (current) current.textContent = text;
  };
  const lookupForm = el("form", { class: "inline", onsubmit: async (event) => {
    event.preventDefault();
    const user = lookup.value.trim();
    if (!user) return;
    try {
      const r = await api("GET", `/routes/${encodeURIComponent(route.name)}/rules/${encodeURIComponent(rule.name)}/users?user=${encodeURIComponent(user)}`);
      show(user, `${user} is ${r.member ? "" : "not "}on list ${rule.name}`);
    } catch (e) { show(user, `Lookup refused: ${e.message}`); }
  } },
    el("label", { for: id("lookup"), text: "Is this id on the list?" }), lookup,
    el("button", { type: "submit" }, "Look up"), answer);
  const summary = [head, ` — ${rule.users} users to ${rule.group} (${rule.users_source}` +
    (rule.api_added || rule.api_removed ? `, +${rule.api_added} / -${rule.api_removed} through the API` : "") + ")"];
  if (!operator) return [...summary, lookupForm];
  const ids = el("textarea", { id: id("users"), "aria-describedby": id("users-note") });
  const parse = () => ids.value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
  const change = (verb) => async () => {
    const key = id("users");
    const list = parse();
    if (!list.length) { say(`Nothing to ${verb}: paste user ids first`, true, key); return; }
    const what = `${verb === "add" ? "Add" : "Remove"} ${list.length} user id(s) ${verb === "add" ? "to" : "from"} list ${rule.name} (${rule.users} now); ` +
      `they ${verb === "add" ? "go to" : "leave"} ${rule.group} on their next request unless an earlier rule decides.`;
    if (await confirmAction(what)) {
      const sent = ids.value;
      // A lookup answer about an id the change touched is no longer true.
      const applied = (done) => {
        const looked = state.lookups[answerId];
        if (looked && done.includes(looked.user)) show("", "");
      };
      const left = await sendInBatches(verb, list, rule.name,
        routePath(status, route.name, `rules/${encodeURIComponent(rule.name)}/users`), key, applied);
      // What was not applied stays, to be corrected and sent again; what was typed meanwhile
      // is left alone (a re-render draws the box anew, empty unless it had the focus).
      const box = document.getElementById(id("users"));
      if (box && (box.value === sent || box.value === "")) box.value = left.join("\n");
    }
  };
  return [...summary,
    el("div", {},
      el("label", { for: id("users"), text: "User ids" }),
      el("span", { id: id("users-note"), class: "note", text: " one per line, or separated by spaces or commas; thousands at once are fine" }),
      ids,
      el("div", { class: "actions" },
        el("button", { type: "button", id: id("add"), onclick: change("add") }, "Add to list"),
        el("button", { type: "button", id: id("remove"), onclick: change("remove") }, "Remove from list")),
      resultSlot(id("users"))),
    lookupForm];
}

/** The admin API reads at most 64 KiB a body: long lists go in batches well under that. */
const BATCH_BYTES = 48 * 1024;

/**
 * Sends `list` in batches; calls `applied` with the ids applied before the answer is shown;
 * answers the ids not applied (those of the refused batch and after).
 */
async function sendInBatches(verb, list, ruleName, path, key, applied) {
  const batches = [[]];
  let size = 0;
  for (const id of list) {
    if (size + id.length + 4 > BATCH_BYTES && batches[batches.length - 1].length) {
      batches.push([]);
      size = 0;
    }
    batches[batches.length - 1].push(id);
    size += id.length + 4;
  }
  const doing = verb === "add" ? "Adding to" : "Removing from";
  let done = 0, answer = null, left = [];
  const counts = { added: 0, removed: 0, already_on: 0, not_on: 0 };
  const tally = () => verb === "add"
    ? `${counts.added} added` + (counts.already_on ? `, ${counts.already_on} already on the list` : "")
    : `${counts.removed} removed` + (counts.not_on ? `, ${counts.not_on} not on the list` : "");
  try {
    for (const batch of batches) {
      answer = await api("POST", path, { [verb]: batch });
      for (const k of Object.keys(counts)) counts[k] += answer[k] || 0;
      done += batch.length;
    }
    applied(list);
    const changed = counts.added + counts.removed > 0;
    say(`${doing} ${ruleName}: ${changed ? "done" : "nothing changed"}, ${done} id(s) in ${batches.length} request(s): ${tally()}` +
      (changed ? ` (version ${answer.version})` : ""), false, key);
  } catch (e) {
    applied(list.slice(0, done));
    left = list.slice(done);
    say(`${doing} ${ruleName} refused after ${done} of ${list.length} id(s)` + (done ? ` (${tally()})` : "") +
      `: ${e.message}${e.field ? ` (field ${e.field})` : ""}. The ${left.length} id(s) not applied are kept below.`, true, key);
  }
  await refresh();
  return left;
}

// ---------------------------------------------------------------- explain

/** A decision's reason in words, with the code that logs and headers use. */
function reasonText(code) {
  const words = {
    header: "the QA header named the group",
    user_list: "the user id is on the rule's list",
    percent: "the user id hashes into the rule's percentage",
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
  for (const name of ["user", "host", "path", "header"]) {
    const value = $(`explain-${name}`).value.trim();
    if (value) params.set(name, value);
  }
  try {
    const e = await api("GET", `/explain?${params}`);
    const rows = [
      ["Route", e.route ?? "none (404)"],
      ["Group", e.group ?? "-"],
      ["Rule", e.rule ?? "none: the route's default group"],
      ["Reason", reasonText(e.reason)],
      ["User id", e.user ? `${e.user}${e.user_valid ? "" : " (not a valid id: anonymous)"}` : "none (anonymous)"],
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
    replace($("explain-result"), rows.flatMap(([k, v]) => [el("dt", { text: k }),
      el("dd", { "data-field": k.toLowerCase().replace(/ /g, "-"), "data-code": k === "Reason" ? e.reason : null, text: String(v) })]));
  } catch (err) {
    replace($("explain-result"), el("dt", { text: "Refused" }), el("dd", { class: "error", text: err.message }));
  }
}

// ---------------------------------------------------------------- plans

function figuresText(f) {
  if (!f) return "-";
  return `${f.requests} requests, ${(100 * f.error_rate).toFixed(2)}% errors, p99 ${f.p99_ms == null ? "-" : f.p99_ms.toFixed(1) + " ms"}`;
}

function renderPlans(status) {
  const plans = status.plans || [];
  // The rule's live percentage and the route's mode too: the buttons' state and the start
  // button's confirmation depend on them.
  const structure = plans.map((p) => [p.route, p.rule, p.state, p.step, livePercent(status, p), overridden(status, p.route)]);
  renderIfChanged("plans", $("plans"), [structure, isOperator()], () => replace($("plans-body"), plans.length
    ? plans.map((p) => planCard(status, p))
    : el("p", { class: "note", text: "No rule has a rollout plan (add `plan:` to a percent rule)." })));
  // The figures change every poll: only they are redrawn.
  for (const p of plans) {
    const card = document.querySelector(`[data-plan="${CSS.escape(p.route + "/" + p.rule)}"]`);
    if (card) replace(card.querySelector(".plan-live"), planLive(p));
  }
}

/** Whether a rollback or promote covers `route` now (nothing starts or resumes under one). */
function overridden(status, route) {
  const r = (status.routes || []).find((x) => x.name === route);
  return Boolean(r && r.mode !== "rules");
}

/** A confidence as a percentage: 0.999 → "99.9%". */
function confidenceText(c) {
  return `${Number((100 * c).toFixed(2))}%`;
}

/** A p-value as people read it. */
function pText(p) {
  if (p == null || Number.isNaN(p)) return "-";
  return p < 0.001 ? "p < 0.001" : `p = ${p.toFixed(3)}`;
}

/** One statistical test of a step: what it compared, on how many requests, and what it found. */
function testText(t) {
  const sizes = `canary n = ${t.canary_n}, baseline n = ${t.baseline_n}`;
  if (!t.enough) return `${t.check} (${t.test}): ${sizes}, too few to judge — ${t.decision}`;
  return `${t.check} (${t.test}): ${sizes}; ${pText(t.p_value)} at ${confidenceText(t.confidence)} confidence; ` +
    `effect ${Number(t.effect).toFixed(3)} against a limit of ${Number(t.limit).toFixed(3)} — ${t.decision}`;
}

function planLive(p) {
  const j = p.judging;
  const figures = j || (p.last_action && p.last_action.figures ? { ...p.last_action.figures, verdict: null } : null);
  const rows = [
    ["Time in step", p.time_in_step_seconds == null ? "-" : `${p.time_in_step_seconds.toFixed(0)} s of ${p.hold_seconds} s` +
      (p.state === "held" ? " (held: the clock is stopped)" : "")],
    [`Canary (${p.group})`, figures ? figuresText(figures.canary) : "-"],
    [`Baseline (${p.baseline})`, figures ? figuresText(figures.baseline) : "-"],
    ["Limits", `at least ${p.min_requests} canary requests; errors at most +${(100 * p.max_error_rate_increase).toFixed(2)} points; p99 at most ${p.max_p99_ratio}× baseline` +
      (p.max_median_ratio != null ? `; median at most ${p.max_median_ratio}× baseline` : "") +
      `; differences must be significant at ${confidenceText(p.confidence)} confidence`],
  ];
  for (const t of (figures && figures.tests) || []) rows.push(["Test", testText(t)]);
  rows.push(["Verdict", j ? verdictText(j.verdict) : (p.state === "running" ? "waiting for the first figures" : "-")]);
  rows.push(["Last move", p.last_action ? `${p.last_action.action}: ${p.last_action.why}` : "-"]);
  return el("dl", { class: "meta" }, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

function verdictText(v) {
  if (v == null) return "-";
  if (typeof v === "string") return v;
  const [kind, why] = Object.entries(v)[0] || ["", ""];
  return `${kind}: ${why}`;
}

/** The live percentage of a plan's rule (0 when not found). */
function livePercent(status, p) {
  const route = (status.routes || []).find((r) => r.name === p.route);
  const rule = route && (route.rules || []).find((r) => r.name === p.rule);
  return rule ? rule.percent : 0;
}

/** The plan's steps as a line: done, current (or where it stopped), pending. */
function progressLine(p) {
  const at = p.step ? p.step - 1 : -1;
  const done = (i) => p.state === "completed" ? i <= at : i < at;
  const stateOf = (i) => {
    if (done(i)) return "done";
    if (i === at) return p.state === "rolled_back" ? "stopped" : "current";
    return "pending";
  };
  const words = { done: "done", current: `current (${p.state.replace("_", " ")})`, stopped: "rolled back here", pending: "pending" };
  return el("ol", { class: "steps", "aria-label": `steps of the plan of ${p.rule}` }, p.steps.map((percent, i) => {
    const s = stateOf(i);
    return el("li", { class: `step ${s}`, "data-step": s, title: `step ${i + 1}: ${percent}% — ${words[s]}` },
      el("span", { class: "dot", "aria-hidden": "true" }),
      el("span", { text: `${percent}%` }),
      el("span", { class: "sr", text: ` step ${i + 1}, ${words[s]}` }));
  }));
}

function planCard(status, p) {
  const path = (cmd) => routePath(status, p.route, `rules/${encodeURIComponent(p.rule)}/plan/${cmd}`);
  const key = slug("plan", p.route, p.rule);
  const held = overridden(status, p.route);
  // Which commands the plan's state allows (the API's own table, docs/rollouts.md); a
  // disabled button says why beside it.
  const active = ["running", "paused", "held"].includes(p.state);
  const why = {
    start: active ? `it is ${p.state}` : held ? "a rollback or promote covers the route: resume its rules first" : null,
    pause: ["running", "held"].includes(p.state) ? null : `it is ${p.state.replace("_", " ")}`,
    resume: p.state === "held" ? "it is held by a rollback or promote: resuming the rules releases it"
      : p.state !== "paused" ? `it is ${p.state.replace("_", " ")}`
      : held ? "a rollback or promote covers the route: resume its rules first" : null,
    abort: active ? null : `it is ${p.state.replace("_", " ")}`,
  };
  const button = (cmd, label, text, danger, body) => el("button", { type: "button", id: slug("plan", cmd, p.route, p.rule), class: danger ? "danger" : null,
    disabled: Boolean(why[cmd]), title: why[cmd] ? `Cannot ${cmd}: ${why[cmd]}` : null, onclick: async () => {
      if (await confirmAction(text)) act(`Plan ${cmd} (${p.rule})`, "POST", path(cmd), body, key);
    } }, label);
  // The API refuses a start that lowers the rule's percentage unless asked; the confirmation
  // says how many users leave the canary, and confirming it asks.
  const live = livePercent(status, p);
  const lowers = live > p.steps[0];
  const startText = `Start the plan of ${p.rule}: it goes to ${p.steps[0]}% of users now and steps up by itself while the canary does as well as ${p.baseline}.`
    + (lowers ? ` This LOWERS the rule from ${live}% to ${p.steps[0]}%: about ${(live - p.steps[0]).toFixed(2)}% of all users leave ${p.group}.` : "");
  const where = p.step ? `${p.state.replace("_", " ")}, step ${p.step} of ${p.steps.length} (${p.step_percent}%)` : "not started";
  const reasons = Object.entries(why).filter(([, w]) => w).map(([cmd, w]) => `${cmd}: ${w}`);
  return el("div", { class: "card plan", "data-plan": `${p.route}/${p.rule}`, "data-state": p.state },
    el("h3", { text: `${p.route} / ${p.rule}: ${where}` }),
    progressLine(p),
    el("p", { class: "note", text: `steps ${p.steps.join("% → ")}%; on failure: ${p.on_failure}` }),
    el("div", { class: "plan-live" }, planLive(p)),
    isOperator() ? [
      el("div", { class: "actions" },
        button("start", "Start", startText, false, lowers ? { allow_decrease: true } : undefined),
        button("pause", "Pause", `Pause the plan of ${p.rule}: it holds its step until resumed.`),
        button("resume", "Resume", `Resume the plan of ${p.rule} from its step, with a new window for its figures.`),
        button("abort", "Abort", `Abort the plan of ${p.rule}: the rule goes to 0% and every canary user of this rule goes back at once.`, true)),
      reasons.length ? el("p", { class: "note", text: `Not now — ${reasons.join("; ")}.` }) : null,
      resultSlot(key)] : null);
}

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
