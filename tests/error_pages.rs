//! End-to-end tests of error pages (`gateway.error_pages`, `gateway.routes[i].error_pages`,
//! `intercept_errors`) and the maintenance switch: the gateway's own errors answer with the
//! configured file and its type; an origin's own 502 is replaced only where
//! `intercept_errors` is on; a missing or oversized file is refused at load naming the key; a
//! route in maintenance answers 503 with `Retry-After` except to the QA override.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use common::*;

const OOPS: &str = "<html><body>We are sorry: something broke.</body></html>\n";
const MISSING: &str = "<html><body>No such page.</body></html>\n";
const SLOW: &str = "{\"error\":\"slow down\"}\n";
const TOKEN: &str = "test-admin-token-0123456789";
const ORIGIN_502_BODY: &str = "origin says: upstream of mine broke";

/// Writes the page files into `dir/pages`.
fn write_pages(dir: &Path) {
    let pages = dir.join("pages");
    std::fs::create_dir_all(&pages).expect("pages dir");
    std::fs::write(pages.join("oops.html"), OOPS).expect("write");
    std::fs::write(pages.join("404.htm"), MISSING).expect("write");
    std::fs::write(pages.join("slow.json"), SLOW).expect("write");
    // Written by `htpasswd -nbB -C 4 alice pw`.
    let users = "alice:$2y$04$1J/N4hbX5sHvesS.6kKdLuhpJGjetmpFE1.pqsDdcMPqEVwdAKEWi\n";
    std::fs::write(dir.join("users.htpasswd"), users).expect("write");
}

/// Starts a gateway on `section` (indented under `gateway:`, without `listen`) from a config
/// file in a folder that holds the pages.
fn start(section: &str) -> Gateway {
    let dir = TempDir::new("pages");
    write_pages(dir.path());
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config = format!(
        "version: 1\nthreads: 2\npid_file: {dir}/gw.pid\nupgrade_sock: {dir}/upgrade.sock\n\
         gateway:\n  listen:\n    - \"{addr}\"\n{section}",
        dir = dir.path().display()
    );
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    Gateway::start_with_file(dir, config_path, addr)
}

/// An origin that answers every request `502` with its own text body, and counts requests.
fn broken_origin() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    // The head only: the tests send no request bodies.
                    let mut got_line = false;
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" && got_line => break,
                            Ok(_) => got_line = true,
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nETag: \"o1\"\r\nContent-Length: {}\r\n\r\n{ORIGIN_502_BODY}",
                        ORIGIN_502_BODY.len()
                    );
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// Asserts `r` is the page `body` with `content_type`, a matching length and a request id.
fn assert_page(r: &Response, status: u16, body: &str, content_type: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.text(), body);
    assert_eq!(r.header("content-type"), Some(content_type));
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(r.header("x-request-id").is_some(), "{:?}", r.headers);
}

/// Every error the gateway makes itself answers with the configured page: no route (404, the
/// `gateway.error_pages` default), a closed server port (502), no healthy server (503), a read
/// timeout (504), a rate limit (429, keeping its `Retry-After`), access control (403, and 401
/// keeping `WWW-Authenticate`); a route with its own `error_pages` uses those instead, and a
/// status without a page keeps the plain-text answer.
#[test]
fn gateway_errors_use_the_pages() {
    let origin = Origin::start("web");
    let slow = Origin::start_with_delay("slow", std::time::Duration::from_secs(3));
    let closed = free_port();
    let down = free_port();
    let gateway = start(&format!(
        "  error_pages: {{ 404: pages/404.htm, 502: pages/oops.html, 503: pages/oops.html, 429: pages/slow.json, 403: pages/slow.json, 401: pages/slow.json, 504: pages/oops.html }}\n\
         \x20 groups:\n\
         \x20   web: {{ servers: [\"{web}\"] }}\n\
         \x20   closed: {{ servers: [\"127.0.0.1:{closed}\"] }}\n\
         \x20   slow: {{ servers: [\"{slow}\"], timeouts: {{ read: 300ms }} }}\n\
         \x20   down:\n      servers: [\"127.0.0.1:{down}\"]\n      health_check: {{ type: tcp, interval: 200ms, fall: 1 }}\n\
         \x20 routes:\n\
         \x20   - name: api\n      paths: [/api]\n      routing: {{ default: web }}\n\
         \x20   - name: closed\n      paths: [/closed]\n      routing: {{ default: closed }}\n\
         \x20   - name: down\n      paths: [/down]\n      routing: {{ default: down }}\n\
         \x20   - name: limited\n      paths: [/limited]\n      rate_limits: [{{ name: one, key: client_ip, rate: 1/m, burst: 1 }}]\n      routing: {{ default: web }}\n\
         \x20   - name: own\n      paths: [/own]\n      error_pages: {{ 502: pages/slow.json }}\n      routing: {{ default: closed }}\n\
         \x20   - name: denied\n      paths: [/denied]\n      access: {{ deny: [\"127.0.0.1\"] }}\n      routing: {{ default: web }}\n\
         \x20   - name: locked\n      paths: [/locked]\n      access: {{ basic_auth: {{ users_file: users.htpasswd, realm: shop }} }}\n      routing: {{ default: web }}\n\
         \x20   - name: slow\n      paths: [/slow]\n      routing: {{ default: slow }}\n\
         \x20   - name: plain\n      paths: [/plain]\n      error_pages: {{}}\n      routing: {{ default: closed }}\n",
        web = origin.addr,
        slow = slow.addr,
    ));
    let r = get(gateway.addr, "/api/x", &[]);
    assert_eq!((r.status, r.text()), (200, "web".to_string()));

    assert_page(
        &get(gateway.addr, "/nowhere", &[]),
        404,
        MISSING,
        "text/html; charset=utf-8",
    );
    assert_page(
        &get(gateway.addr, "/closed/a", &[]),
        502,
        OOPS,
        "text/html; charset=utf-8",
    );
    wait_until("503 once the server is marked down", READY_TIMEOUT, || {
        get(gateway.addr, "/down/a", &[]).status == 503
    });
    assert_page(
        &get(gateway.addr, "/down/a", &[]),
        503,
        OOPS,
        "text/html; charset=utf-8",
    );

    // Burst 1: two requests pass, the third is refused with the page and its Retry-After.
    let mut refused = None;
    for _ in 0..3 {
        let r = get(gateway.addr, "/limited/a", &[]);
        if r.status == 429 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("a 429 within three requests at 1/m with burst 1");
    assert_page(&refused, 429, SLOW, "application/json");
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );

    assert_page(
        &get(gateway.addr, "/denied/a", &[]),
        403,
        SLOW,
        "application/json",
    );

    // The route's own pages replace the default as a whole.
    assert_page(
        &get(gateway.addr, "/own/a", &[]),
        502,
        SLOW,
        "application/json",
    );
    let r = get(gateway.addr, "/plain/a", &[]);
    assert_eq!((r.status, r.text()), (502, "502 Bad Gateway\n".to_string()));
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

/// An origin's own 502 passes through untouched by default; with `intercept_errors: true`
/// its body is discarded and the page sent with the page's type and length; a reload reads
/// the page file again. A replaced response is never compressed.
#[test]
fn intercept_errors_replaces_the_origins_own_error() {
    let (broken, count) = broken_origin();
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gateway = start(&format!(
        "  admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n\
         \x20 error_pages: {{ 502: pages/oops.html }}\n\
         \x20 groups:\n    broken: {{ servers: [\"{broken}\"] }}\n\
         \x20 routes:\n\
         \x20   - name: intercepted\n      paths: [/i]\n      intercept_errors: true\n      compress: {{ algorithms: [gzip], min_size: 1, types: [text/html, text/plain] }}\n      routing: {{ default: broken }}\n\
         \x20   - name: passed\n      paths: [/p]\n      routing: {{ default: broken }}\n",
    ));
    let r = get(gateway.addr, "/p/a", &[]);
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), ORIGIN_502_BODY);
    assert_eq!(r.header("etag"), Some("\"o1\""));

    let before = count.load(std::sync::atomic::Ordering::SeqCst);
    // Twice on one connection: the replaced body's framing leaves the connection usable.
    let mut client = Client::connect(gateway.addr);
    for _ in 0..2 {
        let r = client.get("/i/a", &[]);
        assert_page(&r, 502, OOPS, "text/html; charset=utf-8");
        assert_eq!(r.header("etag"), None, "the origin's validator is dropped");
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        before + 2,
        "the origin answered the intercepted requests itself"
    );

    // The route compresses, but a replaced response is the page as it is.
    let r = get(gateway.addr, "/i/a", &[("accept-encoding", "gzip")]);
    assert_page(&r, 502, OOPS, "text/html; charset=utf-8");
    assert_eq!(r.header("content-encoding"), None);

    // A HEAD gets the page's head and no body; the next request on the connection is intact.
    let mut stream = std::net::TcpStream::connect(gateway.addr).expect("connect");
    stream
        .write_all(
            b"HEAD /i/a HTTP/1.1\r\nHost: a\r\n\r\nGET /i/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .expect("write");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut both = String::new();
    std::io::Read::read_to_string(&mut stream, &mut both).expect("read");
    assert_eq!(both.matches("HTTP/1.1 502").count(), 2, "{both}");
    assert_eq!(both.matches(OOPS).count(), 1, "one body, the GET's: {both}");
    assert!(both.ends_with(OOPS), "{both}");

    // `/status` shows each route's pages and whether it intercepts.
    let status = admin(admin_addr, "GET", "/status", Some(TOKEN), None);
    let json: serde_json::Value = serde_json::from_slice(&status.body).expect("json");
    let pages = &json["routes"][0]["error_pages"];
    assert_eq!(pages["pages"]["502"], "pages/oops.html", "{json}");
    assert_eq!(pages["intercept_errors"], true);
    assert_eq!(json["routes"][1]["error_pages"]["intercept_errors"], false);

    // A reload reads the pages again.
    let changed = "<html><body>Changed page.</body></html>\n";
    std::fs::write(gateway.dir.path().join("pages/oops.html"), changed).expect("write");
    let r = admin(admin_addr, "POST", "/reload", Some(TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_page(
        &get(gateway.addr, "/i/a", &[]),
        502,
        changed,
        "text/html; charset=utf-8",
    );
}

/// A page file that is missing, too large or of an unknown type is refused at load (`-t`),
/// naming the key and the file.
#[test]
fn bad_page_files_are_refused_at_load() {
    let dir = TempDir::new("badpages");
    write_pages(dir.path());
    std::fs::write(
        dir.path().join("pages/huge.html"),
        vec![b'x'; (1 << 20) + 1],
    )
    .expect("write");
    std::fs::write(dir.path().join("pages/page.exe"), "x").expect("write");
    let cases = [
        (
            "  routes:\n    - name: a\n      error_pages: { 502: pages/nope.html }\n      routing: { default: web }\n",
            "gateway.routes[0].error_pages.502",
            "nope.html",
        ),
        (
            "  error_pages: { 503: pages/huge.html }\n  routing: { default: web }\n",
            "gateway.error_pages.503",
            "huge.html",
        ),
        (
            "  error_pages: { 503: pages/page.exe }\n  routing: { default: web }\n",
            "gateway.error_pages.503",
            "page.exe",
        ),
        (
            "  error_pages: { 200: pages/oops.html }\n  routing: { default: web }\n",
            "gateway.error_pages.200",
            "not an error status",
        ),
        (
            "  intercept_errors: true\n  routing: { default: web }\n",
            "gateway.intercept_errors",
            "error_pages",
        ),
    ];
    for (i, (section, key, names)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(
            &config,
            format!(
                "version: 1\ngateway:\n  listen: [\"127.0.0.1:1\"]\n  groups:\n    web: {{ servers: [\"127.0.0.1:2\"] }}\n{section}"
            ),
        )
        .expect("write");
        let out = run_binary(&["-t", "-c", config.to_str().expect("utf-8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} accepted");
        assert!(stderr.contains(key), "case {i}: {stderr}");
        assert!(stderr.contains(names), "case {i}: {stderr}");
    }
    // The same files, good ones only, pass.
    let config = dir.path().join("good.yaml");
    std::fs::write(
        &config,
        "version: 1\ngateway:\n  listen: [\"127.0.0.1:1\"]\n  groups:\n    web: { servers: [\"127.0.0.1:2\"] }\n\
         \x20 error_pages: { 404: pages/404.htm, 502: pages/oops.html }\n  intercept_errors: true\n  routing: { default: web }\n",
    )
    .expect("write");
    let out = run_binary(&["-t", "-c", config.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The maintenance switch: on, every request of the route is answered 503 with its
/// `Retry-After` and the route's 503 page (else a built-in page) without reaching the origin,
/// while the QA override's requests pass; it is audited, shown in `/status`, kept across a
/// restart through the state file, and off serves the route again.
#[test]
fn maintenance_switch_answers_503_but_lets_qa_through() {
    let web = Origin::start("web");
    let canary = Origin::start("canary");
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gateway = start(&format!(
        "  admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\", state_file: state.json }}\n\
         {groups}\
         \x20 routes:\n\
         \x20   - name: shop\n      paths: [/shop]\n      error_pages: {{ 503: pages/oops.html }}\n\
         \x20     routing:\n        default: web\n        rules: [{{ name: qa, header: x-canary-group }}]\n\
         \x20   - name: other\n      routing: {{ default: web }}\n",
        groups = groups_yaml(&[("web", &web), ("canary", &canary)]),
    ));
    let call = |method: &str, path: &str, body: Option<&str>| {
        admin(admin_addr, method, path, Some(TOKEN), body)
    };
    assert_eq!(get(gateway.addr, "/shop/a", &[]).status, 200);

    let r = call(
        "POST",
        "/routes/shop/maintenance",
        Some(r#"{"on": true, "retry_after": "10m"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call("POST", "/routes/other/maintenance", Some(r#"{"on": true}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    for bad in [
        r#"{"on": true, "retry_after": "soon"}"#,
        r#"{"on": false, "retry_after": "1m"}"#,
    ] {
        let r = call("POST", "/routes/shop/maintenance", Some(bad));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }

    let check_down = |gateway: &Gateway| {
        let served = web.count();
        let r = get(gateway.addr, "/shop/a", &[]);
        assert_page(&r, 503, OOPS, "text/html; charset=utf-8");
        assert_eq!(r.header("retry-after"), Some("600"));
        let r = get(gateway.addr, "/elsewhere", &[]);
        assert_eq!(r.status, 503);
        assert!(r.text().contains("maintenance"), "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("300"));
        assert_eq!(web.count(), served, "a request reached the origin");
        // The QA override passes.
        let r = get(gateway.addr, "/shop/a", &[("x-canary-group", "canary")]);
        assert_eq!((r.status, r.text()), (200, "canary".to_string()));
    };
    check_down(&gateway);

    let status = call("GET", "/status", None);
    let json: serde_json::Value = serde_json::from_slice(&status.body).expect("json");
    assert_eq!(
        json["routes"][0]["maintenance"]["retry_after_secs"], 600,
        "{json}"
    );
    let audit = call("GET", "/audit", None).text();
    assert!(
        audit.contains("maintenance off → on (Retry-After 600s)"),
        "{audit}"
    );

    // A new process on the same state file is still in maintenance.
    let mut gateway = gateway;
    let dir = std::mem::replace(&mut gateway.dir, TempDir::new("unused"));
    let (config_path, addr) = (gateway.config_path.clone(), gateway.addr);
    drop(gateway);
    let gateway = Gateway::start_with_file(dir, config_path, addr);
    check_down(&gateway);

    let r = call("POST", "/routes/shop/maintenance", Some(r#"{"on": false}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(gateway.addr, "/shop/a", &[]);
    assert_eq!((r.status, r.text()), (200, "web".to_string()));
    assert_eq!(
        get(gateway.addr, "/elsewhere", &[]).status,
        503,
        "other stays down"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&call("GET", "/status", None).body).expect("json");
    assert_eq!(json["routes"][0]["maintenance"], serde_json::Value::Null);
}
