// The operator page's rollout plans. Runs after app.js (deferred scripts run in order) and
// uses its helpers; the DOM is built with textContent only.
"use strict";

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
