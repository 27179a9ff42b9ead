// The operator page's configuration: proxy hosts (routes), groups with their servers, and
// certificates — listed for everyone, written by admins through `/config/...`. Runs after
// app.js (deferred scripts run in order) and uses its helpers; the DOM is built with
// textContent only. Every form sends what the operator typed and shows the server's own
// validation error beside it: the page checks nothing itself.
"use strict";

/** The configuration objects, fetched with each poll (`null` until the first answer). */
const config = { routes: null, groups: null, certificates: null, editing: { route: null, group: null } };

/** Fetches the three lists; a list the gateway does not answer keeps its last value. */
async function fetchConfig() {
  const [routes, groups, certificates] = await Promise.all([
    api("GET", "/config/routes").catch(() => null),
    api("GET", "/config/groups").catch(() => null),
    api("GET", "/config/certificates").catch(() => null),
  ]);
  if (routes) config.routes = routes.routes;
  if (groups) config.groups = groups.groups;
  if (certificates) config.certificates = certificates.certificates;
}

/** Words split on commas and white space: `"a.example, b.example"` → two names. */
function words(text) {
  return text.split(/[\s,]+/).map((w) => w.trim()).filter(Boolean);
}

/** Whether certificate name `pattern` (`*.example.com` or exact) covers `host`. */
function covers(pattern, host) {
  if (pattern === host) return true;
  if (!pattern.startsWith("*.")) return false;
  const rest = host.slice(host.indexOf(".") + 1);
  return host.includes(".") && rest === pattern.slice(2);
}

/** The certificate that would serve `host`, preferring the one with the most days left. */
function certificateFor(host) {
  const all = (config.certificates || []).filter((c) => (c.names || []).some((n) => covers(n, host.toLowerCase())));
  all.sort((a, b) => (b.days_left ?? -1e9) - (a.days_left ?? -1e9));
  return all[0] || null;
}

/** A host's TLS standing in words, for the hosts list. */
function tlsText(hosts) {
  if (!hosts.length) return "any host: the listeners' default certificate";
  return hosts.map((h) => {
    const c = certificateFor(h);
    if (!c) return `${h}: no certificate`;
    if (c.days_left == null) return `${h}: ${c.source} certificate ${c.state || "not issued yet"}`;
    return `${h}: ${c.source} certificate, ${c.days_left} days left`;
  }).join("; ");
}

/** The route's canary share: each percentage rule as `N% → group`. */
function shareText(status, name) {
  const live = (status.routes || []).find((r) => r.name === name);
  const rules = ((live && live.rules) || []).filter((r) => r.kind === "percent");
  return rules.length ? rules.map((r) => `${r.percent}% → ${r.group}`).join(", ") : "none";
}

/**
 * Draws the three sections. Each list is redrawn when what it shows changed; each form only
 * when what it is built from changed (the object being edited, the groups to pick from, the
 * role), so a poll never takes half-typed text out of a field.
 */
function renderConfig(status) {
  const admin = isAdmin();
  renderIfChanged("hosts-list", $("hosts-list"), [config.routes, config.certificates, shareSignature(status), admin],
    () => renderHosts(status));
  renderIfChanged("host-form", $("host-form-slot"), [config.editing.route, (config.groups || []).map((g) => g.name), admin],
    () => replace($("host-form-slot"), admin ? hostForm() : null));
  renderIfChanged("config-groups", $("config-groups"), [config.groups, (status.groups || []).map((g) => [g.name, g.servers]), admin],
    () => renderGroups(status));
  renderIfChanged("group-form", $("group-form-slot"), [config.editing.group, admin],
    () => replace($("group-form-slot"), admin ? groupForm() : null));
  renderIfChanged("certificates-list", $("certificates-list"), [config.certificates, admin],
    () => renderCertificates());
  renderIfChanged("certificate-form", $("certificate-form-slot"), [admin],
    () => replace($("certificate-form-slot"), admin ? [...uploadForm(), ...acmeForm()] : null));
}

function shareSignature(status) {
  return (status.routes || []).map((r) => [r.name, (r.rules || []).map((x) => [x.kind, x.percent, x.group])]);
}

// ---------------------------------------------------------------- hosts

function renderHosts(status) {
  const routes = config.routes || [];
  const rows = routes.map((r) => {
    const route = r.route || {};
    const hosts = route.hosts || [];
    const admin = isAdmin() && r.source === "api";
    return el("tr", { "data-host": r.name },
      el("td", {}, el("strong", { text: r.name }), el("br"), el("span", { class: "badge", text: r.source })),
      el("td", { text: hosts.length ? hosts.join(", ") : "any" }),
      el("td", { text: (route.paths && route.paths.length ? route.paths : ["/"]).join(", ") + (route.strip_prefix ? " (prefix stripped)" : "") }),
      el("td", { "data-target": (route.routing || {}).default || "", text: (route.routing || {}).default || "-" }),
      el("td", { class: "tls", text: tlsText(hosts) }),
      el("td", { text: shareText(status, r.name) }),
      el("td", {}, admin ? [
        el("button", { type: "button", id: slug("host-edit", r.name), onclick: () => editHost(r) }, "Edit"),
        " ",
        el("button", { type: "button", class: "danger", id: slug("host-delete", r.name), onclick: () => deleteObject("routes", r.name, "host") }, "Delete"),
      ] : el("span", { class: "note", text: r.source === "file" ? "in the file" : "" })));
  });
  replace($("hosts-list"),
    el("div", { class: "table-scroll", tabindex: "0", "aria-label": "Proxy hosts" },
      el("table", { id: "hosts-table" },
        el("thead", {}, el("tr", {}, ["Name", "Hosts", "Paths", "Target group", "TLS", "Canary share", ""].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: "7", class: "note", text: config.routes ? "No routes." : "Loading…" }))))),
    resultSlot("host"));
}

function groupOptions(selected) {
  return (config.groups || []).map((g) => el("option", { value: g.name, selected: g.name === selected }, g.name));
}

/** The add / edit form of a proxy host (a route: hosts, paths, target group). */
function hostForm() {
  const editing = config.editing.route;
  const route = (editing && editing.route) || {};
  const routing = route.routing || {};
  const form = el("form", { id: "host-form", class: "fields" },
    el("label", { for: "host-name", text: "Name" }),
    el("input", { id: "host-name", name: "name", autocomplete: "off", required: true, value: editing ? editing.name : "", readonly: Boolean(editing) }),
    el("label", { for: "host-hosts", text: "Host names" }),
    el("input", { id: "host-hosts", name: "hosts", autocomplete: "off", placeholder: "shop.example.com, *.shop.example.com", value: (route.hosts || []).join(", ") }),
    el("label", { for: "host-paths", text: "Paths" }),
    el("input", { id: "host-paths", name: "paths", autocomplete: "off", placeholder: "/", value: (route.paths || []).join(", ") }),
    el("label", { for: "host-strip", text: "Strip prefix" }),
    el("input", { id: "host-strip", name: "strip_prefix", type: "checkbox", checked: Boolean(route.strip_prefix) }),
    el("label", { for: "host-group", text: "Target group" }),
    el("select", { id: "host-group", name: "group" }, groupOptions(routing.default)),
    el("div", { class: "actions" },
      el("button", { type: "submit", id: "host-save" }, editing ? "Save" : "Add host"),
      editing ? el("button", { type: "button", id: "host-cancel", onclick: () => { config.editing.route = null; forceConfig(); } }, "Cancel") : null));
  form.addEventListener("submit", saveHost);
  return [el("h3", { text: editing ? `Edit ${editing.name}` : "Add a proxy host" }), form];
}

function editHost(entry) {
  config.editing.route = entry;
  forceConfig();
  $("host-hosts").focus();
}

async function saveHost(event) {
  event.preventDefault();
  const name = $("host-name").value.trim();
  const editing = config.editing.route;
  // An edit keeps what the form does not show (rules, identity, access…) as it was.
  const base = editing ? JSON.parse(JSON.stringify(editing.route)) : {};
  const body = { ...base, name };
  const hosts = words($("host-hosts").value);
  const paths = words($("host-paths").value);
  if (hosts.length) body.hosts = hosts; else delete body.hosts;
  if (paths.length) body.paths = paths; else delete body.paths;
  if ($("host-strip").checked) body.strip_prefix = true; else delete body.strip_prefix;
  body.routing = { ...(base.routing || {}), default: $("host-group").value };
  if (!name) return say("A host needs a name", true, "host");
  const ok = await write(editing ? `Host ${name} saved` : `Host ${name} added`, "PUT", `/config/routes/${encodeURIComponent(name)}`, body, "host");
  if (ok) config.editing.route = null;
  await refresh();
}

// ---------------------------------------------------------------- groups and servers

function renderGroups(status) {
  const live = new Map((status.groups || []).map((g) => [g.name, g]));
  const cards = (config.groups || []).map((entry) => {
    const g = live.get(entry.name) || { servers: [] };
    const admin = isAdmin();
    return el("div", { class: "card", "data-config-group": entry.name },
      el("h3", {}, `Group ${entry.name} `, el("span", { class: "badge", text: entry.source })),
      el("div", { class: "table-scroll", tabindex: "0", "aria-label": `Servers of ${entry.name}` }, el("table", {},
        el("thead", {}, el("tr", {}, ["Server", "Weight", "Health", "State", "In flight", ""].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, (g.servers || []).map((s) => {
          const server = s.server || s.addr;
          const key = slug(entry.name, server);
          return el("tr", { "data-server": server, "data-mode": s.mode || "enabled" },
            el("td", { text: s.addr }),
            el("td", { text: String(s.weight) }),
            el("td", {}, el("span", { class: s.healthy ? "healthy" : "unhealthy", text: s.healthy ? "healthy" : "unhealthy" })),
            el("td", { class: "mode", text: s.mode || "enabled" }),
            el("td", { text: String(s.in_flight ?? 0) }),
            el("td", {}, admin ? ["drain", "enable", "disable"].map((action) =>
              el("button", {
                type: "button", id: slug("server", action, key),
                disabled: action === "enable" ? (s.mode || "enabled") === "enabled" : (action === "drain" ? ["draining", "drained"].includes(s.mode) : s.mode === "disabled"),
                onclick: () => serverAction(entry.name, server, action),
              }, action[0].toUpperCase() + action.slice(1))) : null));
        })))),
      resultSlot(slug("group", entry.name)),
      admin && entry.source === "api" ? el("div", { class: "actions" },
        el("button", { type: "button", id: slug("group-edit", entry.name), onclick: () => editGroup(entry) }, "Edit"),
        el("button", { type: "button", class: "danger", id: slug("group-delete", entry.name), onclick: () => deleteObject("groups", entry.name, slug("group", entry.name)) }, "Delete")) : null);
  });
  replace($("config-groups"), cards, resultSlot("group"));
}

async function serverAction(group, server, action) {
  await act(`${action[0].toUpperCase() + action.slice(1)} ${server}`, "POST",
    `/config/groups/${encodeURIComponent(group)}/servers/${encodeURIComponent(server)}/${action}`, undefined, slug("group", group));
}

/** The servers of a group spec as lines `addr [weight]`. */
function serverLines(group) {
  return ((group && group.servers) || []).map((s) => typeof s === "string" ? s : `${s.addr}${s.weight ? " " + s.weight : ""}`).join("\n");
}

function groupForm() {
  const editing = config.editing.group;
  const form = el("form", { id: "group-form", class: "fields" },
    el("label", { for: "group-name", text: "Name" }),
    el("input", { id: "group-name", name: "name", autocomplete: "off", required: true, value: editing ? editing.name : "", readonly: Boolean(editing) }),
    el("label", { for: "group-servers", text: "Servers" }),
    el("textarea", { id: "group-servers", name: "servers", placeholder: "10.0.1.5:8080\n10.0.1.6:8080 3" }, editing ? serverLines(editing.group) : ""),
    el("div", { class: "actions" },
      el("button", { type: "submit", id: "group-save" }, editing ? "Save" : "Add group"),
      editing ? el("button", { type: "button", id: "group-cancel", onclick: () => { config.editing.group = null; forceConfig(); } }, "Cancel") : null));
  form.addEventListener("submit", saveGroup);
  return [el("h3", { text: editing ? `Edit group ${editing.name}` : "Add a group" }),
    el("p", { class: "note", text: "One server a line: its address, then an optional weight." }), form];
}

function editGroup(entry) {
  config.editing.group = entry;
  forceConfig();
  $("group-servers").focus();
}

async function saveGroup(event) {
  event.preventDefault();
  const name = $("group-name").value.trim();
  const editing = config.editing.group;
  const base = editing ? JSON.parse(JSON.stringify(editing.group)) : {};
  const servers = $("group-servers").value.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const [addr, weight] = line.split(/\s+/);
    return weight === undefined ? addr : { addr, weight: Number(weight) };
  });
  if (!name) return say("A group needs a name", true, "group");
  const ok = await write(editing ? `Group ${name} saved` : `Group ${name} added`, "PUT", `/config/groups/${encodeURIComponent(name)}`, { ...base, servers }, "group");
  if (ok) config.editing.group = null;
  await refresh();
}

// ---------------------------------------------------------------- certificates

function renderCertificates() {
  const rows = (config.certificates || []).map((c) => el("tr", { "data-certificate": c.name, "data-source": c.source, "data-state": c.state || "" },
    el("td", {}, el("strong", { text: c.name }), el("br"), el("span", { class: "badge", text: c.source })),
    el("td", { text: (c.names || []).join(", ") }),
    el("td", { text: c.issuer || "-" }),
    el("td", { class: "expiry", "data-days": c.days_left ?? "", text: c.not_after ? `${c.not_after} (${c.days_left} days)` : (c.state || "-") }),
    el("td", { text: c.error || (c.source === "file" ? `listener ${c.listener}${c.default ? " (default)" : ""}` : c.by ? `uploaded by ${c.by}` : c.state || "") }),
    el("td", {}, isAdmin() && (c.source === "api" || (c.source === "acme" && c.by))
      ? el("button", { type: "button", class: "danger", id: slug("certificate-delete", c.name), onclick: () => deleteObject("certificates", c.name, "certificate") }, "Delete")
      : null)));
  replace($("certificates-list"),
    el("div", { class: "table-scroll", tabindex: "0", "aria-label": "Certificates" },
      el("table", { id: "certificates-table" },
        el("thead", {}, el("tr", {}, ["Name", "Names", "Issuer", "Expires", "", ""].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: "6", class: "note", text: config.certificates ? "No certificates." : "Loading…" }))))),
    resultSlot("certificate"));
}

function uploadForm() {
  const form = el("form", { id: "certificate-form", class: "fields" },
    el("label", { for: "certificate-name", text: "Name" }),
    el("input", { id: "certificate-name", name: "name", autocomplete: "off", required: true }),
    el("label", { for: "certificate-chain", text: "Chain" }),
    el("textarea", { id: "certificate-chain", name: "chain", placeholder: "-----BEGIN CERTIFICATE-----" }),
    el("label", { for: "certificate-key", text: "Key" }),
    el("textarea", { id: "certificate-key", name: "key", placeholder: "-----BEGIN PRIVATE KEY-----" }),
    el("div", { class: "actions" }, el("button", { type: "submit", id: "certificate-save" }, "Upload")));
  form.addEventListener("submit", uploadCertificate);
  return [el("h3", { text: "Upload a certificate" }),
    el("p", { class: "note", text: "The chain in PEM, leaf first, and its private key in PEM. The key is never shown again." }), form];
}

async function uploadCertificate(event) {
  event.preventDefault();
  const name = $("certificate-name").value.trim();
  const body = { chain: $("certificate-chain").value, key: $("certificate-key").value };
  const ok = await write(`Certificate ${name} uploaded`, "PUT", `/config/certificates/${encodeURIComponent(name)}`, body, "certificate");
  // The key leaves the page once sent.
  if (ok) $("certificate-form").reset();
  else $("certificate-key").value = "";
  await refresh();
}

/** "Issue with ACME": a certificate for some names, ordered from `gateway.acme`'s CA. */
function acmeForm() {
  const form = el("form", { id: "acme-form", class: "fields" },
    el("label", { for: "acme-name", text: "Name" }),
    el("input", { id: "acme-name", name: "name", autocomplete: "off", required: true }),
    el("label", { for: "acme-names", text: "Host names" }),
    el("input", { id: "acme-names", name: "names", autocomplete: "off", placeholder: "shop.example.com, www.shop.example.com" }),
    el("div", { class: "actions" }, el("button", { type: "submit", id: "acme-save" }, "Issue with ACME")));
  form.addEventListener("submit", requestAcme);
  return [el("h3", { text: "Issue with ACME" }),
    el("p", { class: "note", text: "Ordered from the CA of gateway.acme, answered by HTTP-01 or TLS-ALPN-01, renewed by itself; the list shows it waiting, then issued." }),
    form, resultSlot("acme")];
}

async function requestAcme(event) {
  event.preventDefault();
  const name = $("acme-name").value.trim();
  const ok = await write(`ACME certificate ${name} requested`, "PUT", `/config/certificates/${encodeURIComponent(name)}`,
    { acme: words($("acme-names").value) }, "acme");
  if (ok) $("acme-form").reset();
  await refresh();
}

// ---------------------------------------------------------------- writes

/** Sends one configuration write; shows the answer beside `key`'s control. True when applied. */
async function write(what, method, path, body, key) {
  try {
    const answer = await api(method, path, body);
    say(`${what} (version ${answer.version ?? "-"})`, false, key);
    return true;
  } catch (e) {
    say(`${what.split(" ").slice(0, 2).join(" ")} refused: ${e.message}`, true, key);
    return false;
  }
}

async function deleteObject(kind, name, key) {
  const what = { routes: "host", groups: "group", certificates: "certificate" }[kind];
  if (!(await confirmAction(`Delete the ${what} ${name}? It stops being served on every node.`))) return;
  await write(`Deleted ${what} ${name}`, "DELETE", `/config/${kind}/${encodeURIComponent(name)}`, undefined, key);
  await refresh();
}

/** Redraws the configuration sections at once (after an edit starts or stops). */
function forceConfig() {
  if (state.status) renderConfig(state.status);
}
