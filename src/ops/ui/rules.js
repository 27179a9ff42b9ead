// The operator page's rules, overrides and lists. Runs after app.js (deferred scripts run in order) and
// uses its helpers; the DOM is built with textContent only.
"use strict";

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
    route.maintenance ? el("p", { class: "note warn", id: slug("maintenance-note", route.name),
      text: `In maintenance: every request answers 503 with Retry-After ${route.maintenance.retry_after_secs} s, except the QA override.` }) : null,
    operator ? [el("div", { class: "actions" },
      el("button", { type: "button", class: "danger", id: slug("route-rollback", route.name), onclick: async () => {
        const text = `Roll back route ${route.name}: every user of this route goes to ${route.default_group} at once ` +
          `(now served elsewhere: ${shareElsewhere(route.default_group, route.name)}). Its running plans are held.`;
        if (await confirmAction(text)) act(`Rollback of ${route.name}`, "POST", `/routes/${encodeURIComponent(route.name)}/rollback`, undefined, slug("route", route.name));
      } }, `Roll back ${route.name}`),
      promoteControl(groups, route.name, `/routes/${encodeURIComponent(route.name)}/promote`, `every user of route ${route.name}`, slug("route", route.name)),
      el("button", { type: "button", onclick: async () => {
        if (await confirmAction(`Resume the rules of route ${route.name}.`)) act(`Resume of ${route.name}`, "POST", `/routes/${encodeURIComponent(route.name)}/resume`, undefined, slug("route", route.name));
      } }, `Resume ${route.name}`),
      maintenanceControl(route)),
    resultSlot(slug("route", route.name))] : null,
    el("ol", { class: "rules" }, route.rules.map((rule) => el("li", { class: "rule", "data-rule": rule.name },
      ruleView(status, route, rule)))))));
}

/** The route's maintenance switch: on (every request 503 with Retry-After, the QA override passing) or off. */
function maintenanceControl(route) {
  const on = !route.maintenance;
  const path = `/routes/${encodeURIComponent(route.name)}/maintenance`;
  return el("button", { type: "button", class: on ? "danger" : "", id: slug("route-maintenance", route.name), onclick: async () => {
    const text = on
      ? `Maintenance for route ${route.name}: every request answers 503 with Retry-After 5 minutes (the route's 503 page if it has one), except the QA override, until you end it.`
      : `End maintenance of route ${route.name}: its requests are served again.`;
    if (await confirmAction(text)) {
      act(on ? `Maintenance of ${route.name}` : `End of maintenance of ${route.name}`, "POST", path, { on }, slug("route", route.name));
    }
  } }, on ? `Maintenance ${route.name}` : `End maintenance of ${route.name}`);
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
  // A rule's conditions (`when:`) narrow whatever its kind does.
  const when = rule.when && rule.when.length ? ` when ${rule.when.join(" and ")}` : "";
  if (rule.kind === "header") {
    return [head, ` — header ${rule.header} names the group` + (rule.needs_secret ? " (with its secret)" : "") + when];
  }
  if (rule.kind === "match") {
    return [head, ` — every request${when} to ${rule.group}`];
  }
  if (rule.kind === "percent") {
    const owner = owningPlan(rule);
    const planNote = owner ? ` Driven by its rollout plan (${owner}): abort the plan to set it by hand.` : "";
    const line = [head, ` — ${rule.percent}% of users${when} to ${rule.group} (seed ${rule.seed}; set by ${rule.percent_source}${rule.percent_set_by ? `: ${rule.percent_set_by}` : ""}).${planNote}`];
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
  const summary = [head, ` — ${rule.users} users${when} to ${rule.group} (${rule.users_source}` +
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
