//! The web page in a real headless Chromium (Debian's `chromium`, installed by
//! `scripts/setup.sh test`), against a real gateway and origins: log in, read the overview,
//! explain users, change a percentage and a list, run and hold a plan, roll back, as an
//! operator; look without any change control as a viewer; reconnect after a restart; fit a
//! 1,400-pixel desktop and a 390-pixel phone (every element's box inside the viewport, the
//! confirmation dialog too). The browser's every request is recorded: none may leave the admin
//! origin.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::browser::Browser;
use common::*;
use serde_json::Value;

const OPERATOR: &str = "ui-operator-token-0123456789";
const VIEWER: &str = "ui-viewer-token-0123456789";
const WAIT: Duration = Duration::from_secs(10);

struct Site {
    gateway: Gateway,
    admin: SocketAddr,
    _stable: Origin,
    _canary: Origin,
    _certs: TempDir,
}

/// A gateway with a header rule, two lists, a planned 10% rollout and a rule of conditions;
/// `kept`: with a state file.
fn site(kept: bool) -> Site {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - {{ name: qa-override, header: x-canary-group }}\n\
         \x20     - {{ name: vip, users: [alice, bob], group: stable }}\n\
         \x20     - {{ name: beta, users: [carol], group: canary }}\n\
         \x20     - name: rollout\n        percent: 10\n        group: canary\n\
         \x20       plan: {{ steps: [10, 50, 100], hold: 30s, min_requests: 50, baseline: stable }}\n\
         \x20     - name: app-v5\n        group: canary\n        when:\n\
         \x20         header: {{ name: x-app-version, matches: \"^5\\\\.\" }}\n\
         \x20         cookie: {{ name: beta, equals: always }}\n\
         \x20         query: {{ name: region, equals: eu }}\n\
         \x20         client: [192.0.2.0/24]\n          method: [GET]\n\
         \x20 admin:\n    listen: \"{admin}\"\n    token: \"{OPERATOR}\"\n\
         \x20   tokens: [{{ name: dash, token: \"{VIEWER}\", role: viewer }}]\n{state_file}",
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)]),
        state_file = if kept { "    state_file: state.json\n" } else { "" },
    );
    // A TLS listener whose certificate expires in 10 days: the overview warns.
    let certs = TempDir::new("ui-certs");
    let cert = common::tls::Ca::new("ui CA").issue(
        certs.path(),
        "ui",
        &["ui.test"],
        common::tls::KeyKind::EcdsaP256,
        1,
        10,
    );
    let tls = format!(
        "    - addr: \"127.0.0.1:{}\"\n      tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}\n",
        free_port(),
        cert.cert.display(),
        cert.key.display()
    );
    let gateway = Gateway::start_with_listeners(&tls, &section);
    Site {
        gateway,
        admin,
        _stable: stable,
        _canary: canary,
        _certs: certs,
    }
}

impl Site {
    fn status(&self) -> Value {
        let r = admin(self.admin, "GET", "/status", Some(OPERATOR), None);
        serde_json::from_slice(&r.body).expect("status json")
    }

    fn group_of(&self, user: &str) -> String {
        group_of(self.gateway.addr, user)
    }
}

/// Opens the page and logs in with `token`.
fn log_in(browser: &mut Browser, admin: SocketAddr, token: &str) {
    browser.navigate(&format!("http://{admin}/ui/"));
    browser.wait_for(
        "the login form",
        "!document.getElementById('login-view').hidden",
        WAIT,
    );
    browser.fill("#token", token);
    browser.eval("document.getElementById('login-form').requestSubmit()");
}

#[test]
fn an_operator_runs_a_canary_from_the_page() {
    let site = site(false);
    let mut browser = Browser::start();

    // A wrong token is refused, and nothing is shown.
    log_in(&mut browser, site.admin, "not-the-token-0123456789");
    browser.wait_for(
        "the refusal",
        "document.getElementById('login-error').innerText.includes('refused')",
        WAIT,
    );
    assert_eq!(browser.eval("document.getElementById('app').hidden"), true);

    // The overview lists the groups with their servers' health.
    log_in(&mut browser, site.admin, OPERATOR);
    browser.wait_for(
        "the overview",
        "document.querySelectorAll('#groups-list .group').length === 2 && document.getElementById('conn').innerText === 'live'",
        WAIT,
    );
    let meta = browser.text("#overview-meta");
    assert!(
        meta.contains("ui.test on 127.0.0.1:") && meta.contains("EXPIRES IN"),
        "{meta}"
    );
    let groups = browser.text("#overview-groups");
    assert!(
        groups.contains("Group stable") && groups.contains("Group canary"),
        "{groups}"
    );
    assert!(groups.contains("healthy"), "{groups}");
    // No state file: the page says that a restart undoes every change.
    let banner = browser.text("#banner-not-kept");
    assert!(banner.contains("Changes are not kept"), "{banner}");
    assert!(browser.text("#who").contains("admin (admin)"));
    assert_eq!(
        browser.eval("sessionStorage.getItem('canary-gateway-token')"),
        OPERATOR,
        "the token is kept in sessionStorage"
    );
    assert_eq!(browser.eval("document.cookie"), "", "and in no cookie");

    // Explain a VIP and a user inside the 10% rollout.
    let explain = |browser: &mut Browser, user: &str| {
        browser.fill("#explain-user", user);
        browser.eval("document.getElementById('explain-result').replaceChildren()");
        browser.eval("document.getElementById('explain-form').requestSubmit()");
        browser.wait_for(
            "an explanation",
            "document.querySelector('[data-field=group]')",
            WAIT,
        );
        (
            browser.text("[data-field=group]"),
            browser.text("[data-field=rule]"),
            browser
                .eval("document.querySelector('[data-field=reason]').dataset.code")
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    let vip = explain(&mut browser, "alice");
    assert_eq!(vip, ("stable".into(), "vip".into(), "user_list".into()));
    assert_eq!(
        browser.text("[data-field=identity-source]"),
        "cookie",
        "the page says which identity source gave the id"
    );
    // A QA header value that names no group is said so.
    browser.fill("#explain-header", "nope");
    explain(&mut browser, "alice");
    let said = browser.text("[data-field=qa-header]");
    assert!(said.contains("\"nope\" names no group"), "{said}");
    browser.fill("#explain-header", "");
    let inside = rollout_user("rollout", 10.0, true);
    let rolled = explain(&mut browser, &inside);
    assert_eq!(
        rolled,
        ("canary".into(), "rollout".into(), "percent".into())
    );

    // Explain a request by its headers, cookies, query, client and method: a POST fails the
    // conditional rule's method condition, and the page says which condition failed.
    browser.fill("#explain-headers", "X-App-Version: 5.1; X-Other: 1");
    browser.fill("#explain-cookies", "beta=always; theme=dark");
    browser.fill("#explain-query", "region=eu&page=2");
    browser.fill("#explain-client", "192.0.2.7");
    browser.fill("#explain-method", "POST");
    let posted = explain(&mut browser, "");
    assert_eq!(
        posted,
        (
            "stable".into(),
            "none: the route's default group".into(),
            "anonymous".into()
        )
    );
    let failed = browser.eval(
        "[...document.querySelectorAll('[data-explain-rule=app-v5] li[data-holds=false]')].map(li => li.innerText)",
    );
    assert_eq!(
        failed,
        serde_json::json!(["✗ fails: method in GET"]),
        "only the method failed"
    );
    assert_eq!(
        browser.eval(
            "document.querySelectorAll('[data-explain-rule=app-v5] li[data-holds=true]').length"
        ),
        4,
        "client, header, cookie and query held"
    );
    browser.fill("#explain-method", "GET");
    let got = explain(&mut browser, "");
    assert_eq!(got, ("canary".into(), "app-v5".into(), "condition".into()));
    assert_eq!(
        browser.eval("document.querySelector('[data-explain-rule=app-v5]').dataset.takes"),
        "canary"
    );
    for field in ["headers", "cookies", "query", "client", "method"] {
        browser.fill(&format!("#explain-{field}"), "");
    }

    // Change the percentage: the dialog says what happens before anything changes.
    browser.fill("#percent-default-rollout", "50");
    browser.eval("document.getElementById('percent-default-rollout').form.requestSubmit()");
    let said = browser.confirm();
    assert!(said.contains("from 10% to 50%"), "{said}");
    assert!(said.contains("users already in stay in"), "{said}");
    wait_until("the percentage through the page", WAIT, || {
        site.status()["rules"][3]["percent"] == 50.0
    });
    browser.wait_for(
        "the answer beside the percent form",
        "document.getElementById('result-percent-default-rollout').innerText.includes('Percent of rollout: done')",
        WAIT,
    );
    browser.wait_for(
        "the rule shows its new share while its input keeps the focus",
        "document.querySelector('[data-rule=rollout]').innerText.includes('50% of users to canary') \
         && document.activeElement.id === 'percent-default-rollout'",
        WAIT,
    );

    // Add a user to a list: the proxy routes that user differently at once.
    let outside = rollout_user("rollout", 50.0, false);
    assert_eq!(site.group_of(&outside), "stable");
    browser.fill("#users-default-beta", &format!("{outside}\nsomeone-else"));
    browser.click("#add-default-beta");
    let said = browser.confirm();
    assert!(said.contains("Add 2 user id(s) to list beta"), "{said}");
    wait_until("the list change reaches the proxy", WAIT, || {
        site.group_of(&outside) == "canary"
    });
    // Thousands pasted at once (over the API's 64 KiB body limit: the page sends batches).
    let before = site.status()["rules"][2]["users"]
        .as_u64()
        .expect("beta's size");
    browser.eval(
        "document.getElementById('users-default-beta').value = Array.from({length: 5000}, (_, i) => 'pasted-customer-' + i).join('\\n')",
    );
    browser.click("#add-default-beta");
    let said = browser.confirm();
    assert!(said.contains("Add 5000 user id(s) to list beta"), "{said}");
    browser.wait_for(
        "5,000 ids added, said beside the list",
        "document.getElementById('result-users-default-beta').innerText.includes('done, 5000 id(s) in 3 request(s): 5000 added')",
        WAIT,
    );
    assert_eq!(site.status()["rules"][2]["users"], before + 5000);
    assert_eq!(site.group_of("pasted-customer-4999"), "canary");
    // All applied: the box is emptied (after the page's refresh that follows the answer).
    browser.wait_for(
        "the box emptied",
        "document.getElementById('users-default-beta').value === ''",
        WAIT,
    );

    // A batch with one bad id is refused: the pasted ids stay, to be corrected.
    browser.fill("#users-default-beta", "keep-me-1\nbad;id");
    browser.click("#add-default-beta");
    browser.confirm();
    browser.wait_for(
        "the refusal beside the list",
        "document.getElementById('result-users-default-beta').innerText.includes('refused')",
        WAIT,
    );
    // The page puts the ids back once its refresh after the answer has redrawn the list.
    browser.wait_for(
        "the pasted ids kept",
        "document.getElementById('users-default-beta').value === 'keep-me-1\\nbad;id'",
        WAIT,
    );
    browser.fill("#users-default-beta", "");

    browser.fill("#lookup-default-beta", &outside);
    browser.eval("document.getElementById('lookup-default-beta').form.requestSubmit()");
    browser.wait_for(
        "the lookup",
        &format!(
            "document.querySelector('[data-rule=beta]').innerText.includes({:?})",
            format!("{outside} is on list beta")
        ),
        WAIT,
    );
    // Removing that id takes the lookup's answer away (it is no longer true).
    browser.fill("#users-default-beta", &outside);
    browser.click("#remove-default-beta");
    browser.confirm();
    browser.wait_for(
        "the removal",
        "document.getElementById('result-users-default-beta').innerText.includes('1 removed')",
        WAIT,
    );
    assert_eq!(
        browser.text("#answer-default-beta"),
        "",
        "the answer is cleared"
    );
    // Removing it again changes nothing, and the page says so. (Once the first removal has
    // emptied the box: it empties a box still holding what it sent, which the same id typed
    // again would be.)
    browser.wait_for(
        "the box emptied by the removal",
        "document.getElementById('users-default-beta').value === ''",
        WAIT,
    );
    browser.fill("#users-default-beta", &outside);
    browser.click("#remove-default-beta");
    browser.confirm();
    browser.wait_for(
        "nothing removed",
        "document.getElementById('result-users-default-beta').innerText.includes('nothing changed')",
        WAIT,
    );
    let said = browser.text("#result-users-default-beta");
    assert!(said.contains("0 removed, 1 not on the list"), "{said}");

    // Every control is labelled (keyboard and screen-reader use).
    let unlabelled = browser.eval(
        "[...document.querySelectorAll('input, select, textarea')].filter(e => e.labels.length === 0).map(e => e.id)",
    );
    assert_eq!(
        unlabelled,
        serde_json::json!([]),
        "controls without a label"
    );

    // Some traffic for the charts, then the overview's picture (for the README when asked).
    for i in 0..300 {
        site.group_of(&format!("user-{i}"));
    }
    browser.wait_for(
        "charts with requests",
        "[...document.querySelectorAll('[data-group=stable] .chart span')].some(s => /requests\\/s, now [0-9.]*[1-9]/.test(s.innerText))",
        WAIT,
    );
    // Each chart has a value axis from 0, a time axis ending now, and a legend.
    let labels = browser.eval(
        "[...document.querySelectorAll('[data-group=stable] .chart svg')].map(svg => [...svg.querySelectorAll('text')].map(t => t.textContent))",
    );
    let labels = labels.as_array().expect("charts").clone();
    assert_eq!(labels.len(), 3, "{labels:?}");
    for chart in &labels {
        let texts: Vec<&str> = chart
            .as_array()
            .expect("labels")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            texts.contains(&"0") && texts.iter().any(|t| t.ends_with(" now")),
            "{texts:?}"
        );
    }
    assert!(
        labels[2]
            .as_array()
            .is_some_and(|t| t.contains(&"p50 ms".into()) && t.contains(&"p99 ms".into())),
        "{labels:?}"
    );
    let shot = TempDir::new("ui-shot");
    let path = std::env::var("CANARY_UI_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| shot.path().join("overview.png"));
    browser.screenshot(&path);
    let png = std::fs::read(&path).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a PNG"
    );

    // Start the rollout plan from the page, see it run, hold it with a rollback, abort it.
    let enabled = |browser: &mut Browser| {
        browser.eval(
            "['plan-start', 'plan-pause', 'plan-resume', 'plan-abort', 'percent'].map(b => !document.getElementById(b + '-default-rollout').disabled)",
        )
    };
    assert_eq!(
        enabled(&mut browser),
        serde_json::json!([true, false, false, false, true]),
        "not started: only Start (and the percent box)"
    );
    browser.click("#plan-start-default-rollout");
    let said = browser.confirm();
    assert!(said.contains("goes to 10% of users now"), "{said}");
    browser.wait_for(
        "the plan runs",
        "document.querySelector('[data-plan=\"default/rollout\"] h3').innerText.includes('running, step 1 of 3 (10%)')",
        WAIT,
    );
    assert_eq!(site.status()["plans"][0]["state"], "running");
    browser.wait_for(
        "the plan's figures against its limits",
        "document.querySelector('[data-plan=\"default/rollout\"]').innerText.includes('waiting')",
        WAIT,
    );
    assert_eq!(
        enabled(&mut browser),
        serde_json::json!([false, true, false, true, false]),
        "running: Pause and Abort; the plan owns the percent box"
    );
    assert_eq!(
        browser.eval("[...document.querySelectorAll('[data-plan=\"default/rollout\"] .steps li')].map(l => l.dataset.step)"),
        serde_json::json!(["current", "pending", "pending"]),
        "the progress line"
    );

    // Roll back through the page: every user on the default group, the plan held.
    browser.click("#global-rollback");
    let said = browser.confirm();
    assert!(
        said.contains("every user of every route goes to its route's default group")
            && said.contains("default → stable"),
        "{said}"
    );
    wait_until("rollback", WAIT, || {
        site.status()["global_mode"] == "rollback"
    });
    browser.wait_for(
        "the held banner",
        "(document.getElementById('banner-held') || {innerText: ''}).innerText.includes('holds 1 plan')",
        WAIT,
    );
    browser.wait_for(
        "the held plan's buttons",
        "document.querySelector('[data-plan=\"default/rollout\"]').dataset.state === 'held'",
        WAIT,
    );
    assert_eq!(
        enabled(&mut browser),
        serde_json::json!([false, true, false, true, false]),
        "held: Pause and Abort; Resume waits for the rules to resume"
    );
    browser.click("#plan-abort-default-rollout");
    browser.confirm();
    wait_until("aborted", WAIT, || {
        site.status()["plans"][0]["state"] == "rolled_back"
    });
    browser.wait_for(
        "the answer beside the plan's buttons",
        "document.getElementById('result-plan-default-rollout').innerText.includes('Plan abort (rollout): done')",
        WAIT,
    );
    for user in [
        inside.as_str(),
        outside.as_str(),
        "carol",
        "user-1",
        "user-2",
    ] {
        assert_eq!(site.group_of(user), "stable", "{user} after the rollback");
    }
    browser.wait_for(
        "the page shows the rollback",
        "document.getElementById('overview-meta').innerText.includes('rollback')",
        WAIT,
    );

    // The audit trail: before and after, the step, local time with its zone, filters.
    browser.wait_for(
        "the trail shows the plan",
        "document.getElementById('audit-body').innerText.includes('plan abort')",
        WAIT,
    );
    let rows = browser.eval(
        "[...document.querySelectorAll('#audit-body tr')].map(r => [...r.cells].map(c => c.innerText))",
    );
    let rows = rows.as_array().expect("rows").clone();
    let row = |action: &str| {
        rows.iter()
            .find(|r| r[4] == action)
            .unwrap_or_else(|| panic!("no {action} row in {rows:?}"))
            .clone()
    };
    assert_eq!(
        (row("percent")[5].clone(), row("percent")[6].clone()),
        ("10%".into(), "50%".into())
    );
    assert_eq!(row("plan start")[6], "running, step 1 of 3 (10%)");
    assert_eq!(row("plan abort")[5], "held, step 1 of 3 (10%)");
    let when = row("percent")[0].as_str().unwrap_or("").to_string();
    let (date, zone) = when.split_at(19.min(when.len()));
    assert!(
        date.len() == 19 && date.as_bytes()[4] == b'-' && date.as_bytes()[13] == b':',
        "{when}"
    );
    assert!(zone.trim().len() >= 2, "a zone after the time: {when}");
    browser.fill("#audit-rule", "beta");
    browser.eval("document.getElementById('audit-filter').requestSubmit()");
    browser.wait_for(
        "only beta's entries",
        "[...document.querySelectorAll('#audit-body tr')].every(r => r.cells[3].innerText === 'beta') && document.querySelectorAll('#audit-body tr').length === 5",
        WAIT,
    );

    // The route's maintenance switch: on answers 503 with Retry-After, off serves again.
    browser.click("#route-maintenance-default");
    let said = browser.confirm();
    assert!(said.contains("every request answers 503"), "{said}");
    wait_until("maintenance on", WAIT, || {
        site.status()["routes"][0]["maintenance"]["on"] == true
    });
    let during = get(site.gateway.addr, "/", &[]);
    assert_eq!(during.status, 503);
    assert_eq!(during.header("retry-after"), Some("300"));
    browser.wait_for(
        "the page shows the maintenance",
        "(document.getElementById('maintenance-note-default') || {innerText: ''}).innerText.includes('503') && document.getElementById('route-maintenance-default').innerText.startsWith('End maintenance')",
        WAIT,
    );
    browser.click("#route-maintenance-default");
    assert!(browser.confirm().contains("served again"));
    wait_until("maintenance off", WAIT, || {
        site.status()["routes"][0]["maintenance"].is_null()
    });
    assert_eq!(get(site.gateway.addr, "/", &[]).status, 200);

    // Nothing left the admin origin.
    browser.eval("1"); // reads the events still queued
    let origin = format!("http://{}/", site.admin);
    let elsewhere: Vec<&String> = browser
        .requests
        .iter()
        .filter(|url| !url.starts_with(&origin))
        .collect();
    assert!(
        browser.requests.len() > 10,
        "requests recorded: {:?}",
        browser.requests
    );
    assert!(
        elsewhere.is_empty(),
        "requests to other origins: {elsewhere:?}"
    );
}

/// A viewer sees everything but no control that would change something (the API would
/// refuse it); with a state file there is no "not kept" banner; the page keeps working across
/// a restart of the gateway.
#[test]
fn a_viewer_looks_and_the_page_survives_a_restart() {
    let mut site = site(true);
    let mut browser = Browser::start();
    log_in(&mut browser, site.admin, VIEWER);
    browser.wait_for(
        "the overview, rules and plans",
        "document.querySelectorAll('#groups-list .group').length === 2 && document.querySelector('[data-plan]') && document.querySelector('[data-rule=beta]')",
        WAIT,
    );
    assert!(browser.text("#who").contains("dash (viewer)"));
    assert!(browser.text("#rules-body").contains("rollout"));
    assert!(browser.text("[data-plan]").contains("not started"));
    let buttons =
        browser.eval("[...document.querySelectorAll('#app button')].map(b => b.innerText)");
    assert_eq!(
        buttons,
        serde_json::json!(["Look up", "Look up", "Explain", "Filter", "Newest", "Older"]),
        "a viewer's page has only reading controls"
    );
    let change_controls = browser.eval(
        "document.querySelectorAll('#app textarea, #app input[type=number], [id^=promote-], [id^=plan-], #global-rollback').length",
    );
    assert_eq!(change_controls, 0);
    assert_eq!(
        browser.eval("document.getElementById('banner-not-kept') === null"),
        true,
        "a state file keeps the changes: no banner"
    );
    let r = admin(site.admin, "POST", "/rollback", Some(VIEWER), None);
    assert_eq!(r.status, 403, "{}", r.text());
    // The browser's own request for an icon is no refusal.
    let r = admin(site.admin, "GET", "/favicon.ico", None, None);
    assert_eq!(r.status, 204, "{}", r.text());

    // The gateway stops: the page says so; it comes back on the same ports: the page
    // reconnects by itself with the token it holds.
    let config = std::fs::read_to_string(&site.gateway.config_path).expect("config");
    let old_dir = site.gateway.dir.path().display().to_string();
    let dir = TempDir::new("gw-again");
    let config = config.replace(&old_dir, &dir.path().display().to_string());
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config).expect("config copy");
    let addr = site.gateway.addr;
    site.gateway.signal("KILL");
    browser.wait_for(
        "the page notices",
        "document.getElementById('conn').innerText.includes('reconnecting')",
        WAIT,
    );
    site.gateway = Gateway::start_with_file(dir, path, addr);
    browser.wait_for(
        "the page reconnects",
        "document.getElementById('conn').innerText === 'live'",
        WAIT,
    );
    assert!(
        browser.text("#who").contains("dash (viewer)"),
        "still logged in"
    );
}

/// Every visible element whose box is not inside a box that scrolls or clips on its own:
/// those reaching past `width`, and the page's scroll width.
fn overflow(browser: &mut Browser, width: u32) -> Value {
    browser.eval(&format!(
        "(() => {{
          const bad = [];
          for (const e of document.querySelectorAll('body *')) {{
            const r = e.getBoundingClientRect();
            if (r.width === 0 && r.height === 0) continue;
            let p = e.parentElement, clipped = false;
            for (; p && p !== document.body; p = p.parentElement) {{
              if (['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(p).overflowX)) {{ clipped = true; break; }}
            }}
            if (!clipped && (r.left < -1 || r.right > {width} + 1)) {{
              bad.push(e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
            }}
          }}
          return {{ scroll_width: document.documentElement.scrollWidth, inner_width: innerWidth, outside: bad.slice(0, 20) }};
        }})()"
    ))
}

/// At 1,400 and at 390 pixels (a phone) nothing reaches past the viewport's width and the
/// page does not scroll sideways (the audit table scrolls inside its own box); the
/// confirmation dialog is inside the viewport; the explain form's labels sit beside their
/// fields in one column.
#[test]
fn the_page_fits_a_desktop_and_a_phone() {
    let site = site(false);
    // Entries for the audit table, which is the widest thing on the page.
    for percent in [20, 30] {
        let r = admin(
            site.admin,
            "PUT",
            "/rules/rollout/percent",
            Some(OPERATOR),
            Some(&format!(r#"{{"percent": {percent}}}"#)),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut browser = Browser::start();
    log_in(&mut browser, site.admin, OPERATOR);
    browser.wait_for(
        "the whole page",
        "document.querySelectorAll('#groups-list .group').length === 2 && document.querySelector('[data-plan]') && document.querySelectorAll('#audit-body tr').length === 2",
        WAIT,
    );
    for (width, height) in [(1400, 900), (390, 844)] {
        browser.viewport(width, height);
        let found = overflow(&mut browser, width);
        assert_eq!(found["inner_width"], width, "{found}");
        assert_eq!(
            found["outside"],
            serde_json::json!([]),
            "at {width} px: {found}"
        );
        assert!(
            found["scroll_width"].as_u64() <= Some(u64::from(width)),
            "no sideways scroll at {width} px: {found}"
        );
        if width == 390 {
            assert_eq!(
                browser.eval("(() => { const b = document.querySelector('.table-scroll'); return b.scrollWidth > b.clientWidth; })()"),
                true,
                "the audit table scrolls inside its box"
            );
        }
        // The explain form: each label on its field's row, the fields in one column.
        let rows = browser.eval(
            "[...document.querySelectorAll('#explain-form label')].map(l => { const a = l.getBoundingClientRect(), b = l.control.getBoundingClientRect(); return [Math.abs((a.top + a.bottom) / 2 - (b.top + b.bottom) / 2) < 4, Math.round(b.left)]; })",
        );
        let rows = rows.as_array().expect("labels").clone();
        assert_eq!(rows.len(), 9);
        assert!(
            rows.iter().all(|r| r[0] == true),
            "labels beside their fields at {width} px: {rows:?}"
        );
        assert!(
            rows.iter().all(|r| r[1] == rows[0][1]),
            "fields in one column at {width} px: {rows:?}"
        );
        // The confirmation dialog, with the longest text, inside the viewport.
        browser.click("#global-rollback");
        browser.wait_for(
            "the dialog",
            "document.getElementById('confirm').open",
            WAIT,
        );
        let dialog = browser.eval(
            "(() => { const r = document.getElementById('confirm').getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()",
        );
        let [left, top, right, bottom] =
            [0, 1, 2, 3].map(|i| dialog[i].as_f64().unwrap_or(f64::NAN));
        assert!(
            left >= 0.0 && top >= 0.0 && right <= f64::from(width) && bottom <= f64::from(height),
            "the dialog at {width} px: {dialog}"
        );
        browser.click("#confirm-cancel");
        browser.wait_for(
            "the dialog closes",
            "!document.getElementById('confirm').open",
            WAIT,
        );
    }
    assert_eq!(
        site.status()["global_mode"],
        "rules",
        "cancelled: nothing changed"
    );
}

/// Fills the page's fields (selector, value) and submits the form with id `form`, as a
/// person would.
fn submit_form(browser: &mut Browser, form: &str, fields: &[(&str, &str)]) {
    for (selector, value) in fields {
        browser.fill(selector, value);
    }
    browser.eval(&format!(
        "document.getElementById('{form}').requestSubmit()"
    ));
}

const ADMIN: &str = "ui-admin-token-0123456789";

/// An admin runs the edge from the page, as Nginx Proxy Manager users do: adds a group and a
/// proxy host pointing at it, sees it listed and a request served through it, sees a bad
/// write refused with the server's own error, drains the group's server and sees it drained,
/// and uploads a certificate whose expiry the list shows and which the TLS listener then
/// serves by SNI — no file edited, no reload.
#[test]
fn an_admin_runs_the_edge_from_the_page() {
    let (stable, shop) = (Origin::start("stable"), Origin::start("shop"));
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let certs = TempDir::new("ui-admin-certs");
    let file_cert = common::tls::Ca::new("file CA").issue_p256(certs.path(), "file", "ui.test", 1);
    let section = format!(
        "{groups}  routing:\n    default: stable\n\
         \x20 admin:\n    listen: \"{admin_addr}\"\n    token: \"{ADMIN}\"\n    state_file: state.json\n",
        groups = groups_yaml(&[("stable", &stable)]),
    );
    let tls = format!(
        "    - addr: \"{tls_addr}\"\n      tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}\n",
        file_cert.cert.display(),
        file_cert.key.display()
    );
    let gateway = Gateway::start_with_listeners(&tls, &section);
    let mut browser = Browser::start();
    log_in(&mut browser, admin_addr, ADMIN);
    browser.wait_for(
        "the file's route in the hosts list",
        "document.querySelector('#hosts-table [data-host=default]')",
        WAIT,
    );

    // A group, then a host pointing at it.
    submit_form(
        &mut browser,
        "group-form",
        &[
            ("#group-name", "shop"),
            ("#group-servers", &shop.addr.to_string()),
        ],
    );
    browser.wait_for(
        "the new group listed with its server",
        &format!(
            "document.querySelector('[data-config-group=shop] [data-server=\"{}\"]')",
            shop.addr
        ),
        WAIT,
    );
    browser.wait_for(
        "the new group offered as a target",
        "[...document.getElementById('host-group').options].some(o => o.value === 'shop')",
        WAIT,
    );
    submit_form(
        &mut browser,
        "host-form",
        &[
            ("#host-name", "shop"),
            ("#host-hosts", "shop.test"),
            ("#host-group", "shop"),
        ],
    );
    browser.wait_for(
        "the new host listed with its target",
        "document.querySelector('#hosts-table [data-host=shop] [data-target=shop]')",
        WAIT,
    );
    let mut client = Client::connect(gateway.addr);
    let through = client.send_raw(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    assert_eq!((through.status, through.text().as_str()), (200, "shop"));
    let elsewhere = client.send_raw(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n");
    assert_eq!(elsewhere.text(), "stable");

    // A write the server refuses: its own words, beside the form, naming the key.
    submit_form(
        &mut browser,
        "host-form",
        &[
            ("#host-name", "broken"),
            ("#host-paths", "no-slash"),
            ("#host-group", "shop"),
        ],
    );
    browser.wait_for(
        "the server's validation error beside the form",
        "document.getElementById('result-host').classList.contains('error') && document.getElementById('result-host').textContent.includes('paths')",
        WAIT,
    );
    assert_eq!(
        browser.eval("document.querySelector('#hosts-table [data-host=broken]') === null"),
        true,
        "nothing was added"
    );

    // Drain the group's one server: with nothing in flight it is drained at once.
    let server_id = format!(
        "#server-drain-shop-{}",
        shop.addr.to_string().replace(['.', ':'], "_")
    );
    browser.click(&server_id);
    browser.wait_for(
        "the server drained",
        &format!(
            "document.querySelector('[data-config-group=shop] [data-server=\"{}\"]').dataset.mode === 'drained'",
            shop.addr
        ),
        WAIT,
    );
    let served_before = shop.count();
    let drained = client.send_raw(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    assert_ne!(
        drained.text(),
        "shop",
        "a drained server gets no new request"
    );
    assert_eq!(shop.count(), served_before);

    // Upload a certificate: listed with its expiry, served by SNI.
    let uploaded = common::tls::Ca::new("upload CA").issue(
        certs.path(),
        "upload",
        &["upload.test"],
        common::tls::KeyKind::EcdsaP256,
        77,
        20,
    );
    let chain = std::fs::read_to_string(&uploaded.cert).expect("chain");
    let key = std::fs::read_to_string(&uploaded.key).expect("key");
    submit_form(
        &mut browser,
        "certificate-form",
        &[
            ("#certificate-name", "upload"),
            ("#certificate-chain", &chain),
            ("#certificate-key", &key),
        ],
    );
    browser.wait_for(
        "the uploaded certificate listed with its expiry",
        "(() => { const e = document.querySelector('[data-certificate=upload] .expiry'); return e && Number(e.dataset.days) >= 19; })()",
        WAIT,
    );
    assert_eq!(
        common::tls::served_serial(tls_addr, Some("upload.test")),
        uploaded.serial
    );
    let key_line = key.lines().nth(1).expect("a key line");
    assert_eq!(
        browser.eval(&format!(
            "document.body.innerText.includes({}) || document.getElementById('certificate-key').value !== ''",
            serde_json::json!(key_line)
        )),
        false,
        "the key leaves the page once sent"
    );
    let outside: Vec<&String> = browser
        .requests
        .iter()
        .filter(|url| !url.starts_with(&format!("http://{admin_addr}/")))
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the admin origin: {outside:?}"
    );
}

/// An admin asks for a certificate with ACME from the page (Pebble, HTTP-01 really answered on
/// the plaintext listener) and sees it go from waiting to issued with its expiry; the TLS
/// listener then serves it by SNI.
#[test]
fn an_admin_issues_a_certificate_with_acme_from_the_page() {
    let stable = Origin::start("stable");
    let work = TempDir::new("ui-acme");
    let plain: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let pebble = common::pebble::start_pebble(work.path(), plain.port(), free_port());
    let file_cert = common::tls::Ca::new("file CA").issue_p256(work.path(), "file", "ui.test", 3);
    let dir = TempDir::new("ui-acme-gw");
    let config = format!(
        "version: 1\nthreads: 2\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         gateway:\n  listen:\n    - \"{plain}\"\n\
         \x20   - {{ addr: \"{tls_addr}\", tls: {{ certificates: [{{ cert: \"{cert}\", key: \"{key}\" }}] }} }}\n\
         \x20 admin:\n    listen: \"{admin_addr}\"\n    token: \"{ADMIN}\"\n    state_file: state.json\n\
         \x20 acme:\n    directory: \"{directory}\"\n    email: ops@example.com\n    accept_terms: true\n\
         \x20   ca_file: \"{ca}\"\n    retry: 1s\n\
         {groups}  routing:\n    default: stable\n",
        d = dir.path().display(),
        cert = file_cert.cert.display(),
        key = file_cert.key.display(),
        directory = pebble.directory,
        ca = pebble.ca_file.display(),
        groups = groups_yaml(&[("stable", &stable)]),
    );
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let gateway = Gateway::start_with_file(dir, config_path, plain);

    let mut browser = Browser::start();
    log_in(&mut browser, admin_addr, ADMIN);
    browser.wait_for(
        "the file's certificate listed",
        "document.querySelector('#certificates-table [data-source=file]')",
        WAIT,
    );
    submit_form(
        &mut browser,
        "acme-form",
        &[
            ("#acme-name", "shop"),
            ("#acme-names", common::pebble::PEBBLE_NAME),
        ],
    );
    browser.wait_for(
        "the request listed",
        "document.querySelector('#certificates-table [data-certificate=shop][data-source=acme]')",
        WAIT,
    );
    // Issued: ordered, validated by the CA over HTTP-01, stored, served. Slower than a page
    // change (the CA's own checks), so a wider wait.
    browser.wait_for(
        "the certificate issued, with its expiry",
        "(() => { const r = document.querySelector('[data-certificate=shop]'); return r && r.dataset.state === 'issued' && Number(r.querySelector('.expiry').dataset.days) > 0; })()",
        Duration::from_secs(120),
    );
    let listed = admin(
        admin_addr,
        "GET",
        "/config/certificates/shop",
        Some(ADMIN),
        None,
    );
    let row: Value = serde_json::from_slice(&listed.body).expect("json");
    let serial = row["serial"]
        .as_str()
        .expect("a serial")
        .to_ascii_uppercase();
    assert_eq!(
        common::tls::served_serial(tls_addr, Some(common::pebble::PEBBLE_NAME)),
        serial.trim_start_matches('0'),
        "the TLS listener serves it by SNI; log:\n{}",
        gateway.log()
    );
    assert_eq!(
        common::tls::served_serial(tls_addr, Some("ui.test")),
        file_cert.serial,
        "other names keep the file's"
    );
}
