// The operator page's charts. Runs after app.js (deferred scripts run in order) and
// uses its helpers; the DOM is built with textContent only.
"use strict";

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
