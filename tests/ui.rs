//! The web page in a real headless Chromium (Debian's `chromium`, installed by
//! `scripts/setup.sh test`), against a real gateway and origins: log in, read the overview,
//! explain users, change a percentage and a list, roll back, as an operator; look without
//! changing anything as a viewer; reconnect after a restart. The browser's every request is
//! recorded: none may leave the admin origin.

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

fn site() -> Site {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - {{ name: qa-override, header: x-canary-group }}\n\
         \x20     - {{ name: vip, users: [alice, bob], group: stable }}\n\
         \x20     - {{ name: beta, users: [carol], group: canary }}\n\
         \x20     - name: rollout\n        percent: 10\n        group: canary\n\
         \x20       plan: {{ steps: [10, 50, 100], hold: 30s, min_requests: 50, baseline: stable }}\n\
         \x20 admin:\n    listen: \"{admin}\"\n    token: \"{OPERATOR}\"\n\
         \x20   tokens: [{{ name: dash, token: \"{VIEWER}\", role: viewer }}]\n",
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)])
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
    let site = site();
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
    assert!(browser.text("#who").contains("admin (operator)"));
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
            browser.text("[data-field=reason]"),
        )
    };
    let vip = explain(&mut browser, "alice");
    assert_eq!(vip, ("stable".into(), "vip".into(), "user_list".into()));
    let inside = rollout_user("rollout", 10.0, true);
    let rolled = explain(&mut browser, &inside);
    assert_eq!(
        rolled,
        ("canary".into(), "rollout".into(), "percent".into())
    );

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
        "the page shows the change",
        "document.getElementById('message').innerText.includes('Percent of rollout: done')",
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
        "5,000 ids added",
        "document.getElementById('message').innerText.includes('done, 5000 id(s) in 3 request(s)')",
        WAIT,
    );
    assert_eq!(site.status()["rules"][2]["users"], before + 5000);
    assert_eq!(site.group_of("pasted-customer-4999"), "canary");

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

    // Start the rollout plan from the page, see it run, abort it.
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
        "document.querySelector('[data-plan=\"default/rollout\"]').innerText.includes('waiting:')",
        WAIT,
    );
    browser.click("#plan-abort-default-rollout");
    browser.confirm();
    wait_until("aborted", WAIT, || {
        site.status()["plans"][0]["state"] == "rolled_back"
    });

    // Roll back through the page: every user on the default group.
    browser.click("#global-rollback");
    let said = browser.confirm();
    assert!(
        said.contains("every user of every route goes to its route's default group"),
        "{said}"
    );
    wait_until("rollback", WAIT, || {
        site.status()["global_mode"] == "rollback"
    });
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

/// A viewer sees everything and its change is refused with the API's words; the page keeps
/// working across a restart of the gateway.
#[test]
fn a_viewer_looks_and_the_page_survives_a_restart() {
    let mut site = site();
    let mut browser = Browser::start();
    log_in(&mut browser, site.admin, VIEWER);
    browser.wait_for(
        "the overview",
        "document.querySelectorAll('#groups-list .group').length === 2",
        WAIT,
    );
    assert!(browser.text("#who").contains("dash (viewer)"));
    assert!(browser.text("#rules-body").contains("rollout"));
    browser.fill("#percent-default-rollout", "30");
    browser.eval("document.getElementById('percent-default-rollout').form.requestSubmit()");
    browser.confirm();
    browser.wait_for(
        "the refusal",
        "document.getElementById('message').innerText.includes('refused')",
        WAIT,
    );
    let message = browser.text("#message");
    assert!(
        message.contains("is a viewer"),
        "the API's words: {message}"
    );
    assert_eq!(
        site.status()["rules"][3]["percent"],
        10.0,
        "nothing changed"
    );
    let r = admin(site.admin, "POST", "/rollback", Some(VIEWER), None);
    assert_eq!(r.status, 403, "{}", r.text());

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
