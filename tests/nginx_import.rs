//! `canary-gateway import nginx`: the command line (exit statuses 0, 1 and 2, the report, the
//! written file passing `-t`), and the reverse check — each fixture served by Debian's nginx
//! and, imported, by the gateway, the same requests sent to both, the same origin answering.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::tls::{connect_with, Ca, KeyKind};
use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nginx")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every file under `dir` with `edit` applied to its text.
fn edit_files(dir: &Path, edit: &dyn Fn(&str) -> String) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            edit_files(&path, edit);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            std::fs::write(&path, edit(&text)).expect("write");
        }
    }
}

fn import(args: &[&str]) -> Output {
    let mut all = vec!["import", "nginx"];
    all.extend_from_slice(args);
    run_binary(&all)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A certificate for `names` (and its key) written where the NPM fixture names them.
fn write_npm_certificate(conf: &Path, names: &[&str]) {
    let dir = conf.join("certs/npm-1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ca = Ca::new("nginx-import test CA");
    let issued = ca.issue(&dir, "fullchain", names, KeyKind::EcdsaP256, 7, 2);
    std::fs::rename(&issued.key, dir.join("privkey.pem")).expect("rename key");
}

/// Each fixture imports with the exit status its report calls for, the report counts every
/// directive, and the written file passes `canary-gateway -t`.
#[test]
fn every_fixture_imports_and_passes_dash_t() {
    for (name, status) in [
        ("seed", 0),
        ("canary", 0),
        ("multisite", 0),
        ("npm", 0),
        ("lua", 1),
    ] {
        let dir = TempDir::new("nginx-import");
        let conf = dir.path().join("conf");
        copy_dir(&fixture(name), &conf);
        if name == "npm" {
            write_npm_certificate(&conf, &["app.example.com", "ws.example.com"]);
        }
        let out = dir.path().join("gateway.yaml");
        let report = dir.path().join("report.txt");
        let run = import(&[
            conf.join("nginx.conf").to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
            "--report",
            report.to_str().expect("utf-8"),
        ]);
        let report = std::fs::read_to_string(&report).expect("the report is written");
        assert_eq!(
            run.status.code(),
            Some(status),
            "{name}:\n{report}\n{}",
            text(&run.stderr)
        );
        assert!(
            report.contains(" directives: "),
            "{name}: the counts:\n{report}"
        );
        assert!(
            text(&run.stderr).contains(" directives: "),
            "{name}: the counts on the terminal too"
        );
        let written = std::fs::read_to_string(&out).expect("the file is written");
        assert!(
            written.contains("# nginx: "),
            "{name}: source comments:\n{written}"
        );
        let check = run_binary(&["-t", "-c", out.to_str().expect("utf-8")]);
        assert!(
            check.status.success(),
            "{name}: -t: {}{}\n{written}",
            text(&check.stdout),
            text(&check.stderr)
        );
    }
}

/// The seed: nothing left over, and the report names each directive's file:line.
#[test]
fn the_seed_imports_with_nothing_left_over() {
    let seed = fixture("seed/nginx.conf");
    let run = import(&[seed.to_str().expect("utf-8")]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let report = text(&run.stderr);
    let at = format!(
        "{}:7  proxy_pass http://v1  [translated, routing]",
        seed.display()
    );
    assert!(report.contains(&at), "{report}");
    assert!(report.contains("0 not translated"), "{report}");
    assert!(report.contains("everything that affects routing was translated"));
    let yaml = text(&run.stdout);
    assert!(
        yaml.contains("default: v1"),
        "the file on standard output:\n{yaml}"
    );
}

/// OpenResty code that decides routing: exit 1, its file:line, and `users_store` named for
/// the Redis lookup.
#[test]
fn lua_routing_exits_one_and_names_users_store() {
    let lua = fixture("lua/nginx.conf");
    let run = import(&[lua.to_str().expect("utf-8"), "-o", "/dev/null"]);
    assert_eq!(run.status.code(), Some(1));
    let report = text(&run.stderr);
    let line = report
        .lines()
        .find(|l| l.contains("access_by_lua_block"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.starts_with(&format!("{}:18  ", lua.display())),
        "{line}"
    );
    assert!(
        line.contains("NOT translated, routing") && line.contains("users_store"),
        "{line}"
    );
    assert!(
        report.contains("3 directive(s) that affect routing were NOT translated"),
        "{report}"
    );
}

/// A syntax error: exit 2, file:line:column on standard error, nothing written.
#[test]
fn syntax_errors_exit_two_with_their_position() {
    let dir = TempDir::new("nginx-import");
    let conf = dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        "server {\n    listen 80;\n    location / {\n        proxy_pass http://v1\n    }\n}\n",
    )
    .expect("write");
    let out = dir.path().join("out.yaml");
    let run = import(&[
        conf.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(run.status.code(), Some(2));
    let expected = format!("{}:4:9: unexpected \"}}\"", conf.display());
    assert!(
        text(&run.stderr).contains(&expected),
        "{}",
        text(&run.stderr)
    );
    assert!(!out.exists());
    // An include that names no file is an error at the include.
    std::fs::write(&conf, "http {\n  include missing.conf;\n}\n").expect("write");
    let run = import(&[conf.to_str().expect("utf-8")]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains(":2:3: include \"missing.conf\": no such file"),
        "{}",
        text(&run.stderr)
    );
    let run = import(&[]);
    assert_eq!(run.status.code(), Some(2), "no file named");
}

// ---- the reverse check ----------------------------------------------------------------

/// Debian's nginx in the foreground on a temporary prefix; killed on drop.
struct Nginx {
    child: Child,
    error_log: PathBuf,
}

impl Nginx {
    fn start(prefix: &Path, main: &Path, pid_dir: &Path, ports: &[u16]) -> Nginx {
        let error_log = pid_dir.join("nginx-error.log");
        let globals = format!(
            "daemon off; master_process on; worker_processes 1; pid {};",
            pid_dir.join("nginx.pid").display()
        );
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(main)
            .arg("-e")
            .arg(&error_log)
            .arg("-g")
            .arg(globals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/sbin/nginx (scripts/setup.sh test installs it)");
        let mut nginx = Nginx { child, error_log };
        for port in ports {
            let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
            let start = Instant::now();
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    panic!("nginx exited ({status}):\n{}", nginx.log());
                }
                assert!(
                    start.elapsed() < READY_TIMEOUT,
                    "nginx not on {addr}:\n{}",
                    nginx.log()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
        nginx
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// One request as the check sends it to both.
struct Probe {
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    tls: bool,
}

const fn plain(
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> Probe {
    Probe {
        host,
        path,
        headers,
        tls: false,
    }
}

/// A websocket origin at port `10005` of the fixtures: every text message is answered with
/// "echo: " and the message, on as many sessions as come.
fn websocket_echo_server() -> SocketAddr {
    let listener = test_listener();
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(msg) = ws.read() {
                    if let Ok(text) = msg.to_text() {
                        if msg.is_text()
                            && ws
                                .send(tungstenite::Message::text(format!("echo: {text}")))
                                .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A fixture served by nginx and by the gateway with the imported file.
struct Pair {
    origins: Vec<Origin>,
    _nginx: Nginx,
    _gateway: Gateway,
    /// nginx's port and the gateway's for each port the fixture listens on.
    ports: Vec<(u16, u16, u16)>,
    _dir: TempDir,
}

/// Starts `name`'s fixture both ways. `listen`: the ports the fixture listens on (each is
/// given a free port, one for nginx and one for the gateway); `fragment`: a file nginx
/// includes inside `http { }` (conf.d style) rather than a whole nginx.conf.
fn start_pair(name: &str, listen: &[u16], fragment: bool, tls_names: &[&str]) -> Pair {
    let dir = TempDir::new("nginx-reverse");
    let conf = dir.path().join("conf");
    copy_dir(&fixture(name), &conf);
    std::fs::create_dir_all(conf.join("logs")).expect("logs dir");
    let websockets = websocket_echo_server();
    let origins: Vec<Origin> = (1..=4)
        .map(|n| Origin::start(&format!("origin-{n}")))
        .collect();
    let ports: Vec<(u16, u16, u16)> = listen
        .iter()
        .map(|p| (*p, free_port(), free_port()))
        .collect();
    let scratch = dir.path().to_path_buf();
    let edit = |text: &str| -> String {
        let mut t = text.to_string();
        for (n, o) in origins.iter().enumerate() {
            t = t.replace(&format!("1000{}", n + 1), &o.addr.port().to_string());
        }
        t = t.replace("10005", &websockets.port().to_string());
        for (p, nginx, _) in &ports {
            for end in [";", " "] {
                t = t.replace(
                    &format!("listen {p}{end}"),
                    &format!("listen 127.0.0.1:{nginx}{end}"),
                );
            }
        }
        t.replace("/var/log/nginx/", &format!("{}/", scratch.display()))
            .replace("/tmp/nginx/body", &format!("{}/body", scratch.display()))
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !(l.starts_with("user ")
                    || l.starts_with("pid ")
                    || l.starts_with("worker_processes ")
                    || l.starts_with("listen [::]"))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    edit_files(&conf, &edit);
    // nginx's temporary folders in the test's own folder, so it runs as any user (Debian's
    // defaults are under /var/lib/nginx).
    let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|kind| format!("{kind}_temp_path {}/{kind};\n", scratch.display()))
        .collect();
    if !fragment {
        let main = conf.join("nginx.conf");
        let text = std::fs::read_to_string(&main).expect("nginx.conf");
        let temp: String = temp
            .lines()
            .filter(|l| !text.contains(l.split(' ').next().unwrap_or(l)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(
            &main,
            text.replacen("http {", &format!("http {{\n{temp}"), 1),
        )
        .expect("write");
    }
    if !tls_names.is_empty() {
        write_npm_certificate(&conf, tls_names);
    }
    let file = conf.join("nginx.conf");
    let main = if fragment {
        let main = dir.path().join("main.conf");
        let lua = if name == "lua" {
            "load_module /usr/lib/nginx/modules/ndk_http_module.so;\nload_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n"
        } else {
            ""
        };
        std::fs::write(
            &main,
            format!(
                "{lua}events {{}}\nhttp {{\n  access_log off;\n{temp}  include {};\n}}\n",
                file.display()
            ),
        )
        .expect("write main");
        main
    } else {
        file.clone()
    };
    let nginx_ports: Vec<u16> = ports.iter().map(|p| p.1).collect();
    let nginx = Nginx::start(&conf, &main, dir.path(), &nginx_ports);

    // The gateway: the imported file with the gateway's own ports and Pingora's keys.
    let out = dir.path().join("imported.yaml");
    let run = import(&[
        file.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        run.status.code().is_some_and(|c| c < 2),
        "import {name}: {}",
        text(&run.stderr)
    );
    let mut yaml = std::fs::read_to_string(&out).expect("imported");
    for (_, nginx, gateway) in &ports {
        yaml = yaml
            .replace(&format!("0.0.0.0:{nginx}"), &format!("127.0.0.1:{gateway}"))
            .replace(
                &format!("127.0.0.1:{nginx}"),
                &format!("127.0.0.1:{gateway}"),
            )
            .replace(
                &format!("https_port: {nginx}"),
                &format!("https_port: {gateway}"),
            );
    }
    let gw_dir = TempDir::new("nginx-reverse-gw");
    let pingora = format!(
        "version: 1\nthreads: 2\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\ngrace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 1\n",
        d = gw_dir.path().display()
    );
    let yaml = yaml.replacen("version: 1\n", &pingora, 1);
    let config = gw_dir.path().join("gateway.yaml");
    std::fs::write(&config, &yaml).expect("write gateway config");
    let first: SocketAddr = ([127, 0, 0, 1], ports[0].2).into();
    let gateway = Gateway::start_with_file(gw_dir, config, first);
    Pair {
        origins,
        _nginx: nginx,
        _gateway: gateway,
        ports,
        _dir: dir,
    }
}

impl Pair {
    /// What answered `probe` on port `port` of `which` (1: nginx, 2: the gateway): the
    /// origin's name and the path it got, or where a redirect points (without its port).
    fn answer(&self, probe: &Probe, port: u16, gateway: bool) -> String {
        let (_, nginx, gw) = self
            .ports
            .iter()
            .find(|p| p.0 == port)
            .expect("a fixture port");
        let addr: SocketAddr = ([127, 0, 0, 1], if gateway { *gw } else { *nginx }).into();
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            probe.path, probe.host
        );
        for (k, v) in probe.headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        let (status, location, body) = if probe.tls {
            let mut tls = connect_with(addr, Some(probe.host), |_| {}).expect("TLS connect");
            tls.write_all(request.as_bytes()).expect("write");
            let mut raw = Vec::new();
            tls.read_to_end(&mut raw).ok();
            let raw = text(&raw);
            let status: u16 = raw
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = raw.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            (status, None, body)
        } else {
            let r = Client::connect(addr).send_raw(request.as_bytes());
            (r.status, r.header("location").map(str::to_string), r.text())
        };
        if (300..400).contains(&status) {
            let location = location.unwrap_or_default();
            // nginx names no port for 443; the gateway names its test port.
            let without_port: String = match location.strip_prefix("https://") {
                Some(rest) => {
                    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    format!("https://{}{path}", host.split(':').next().unwrap_or(host))
                }
                None => location,
            };
            return format!("redirect to {without_port}");
        }
        let origin = self.origins.iter().find(|o| body.contains(&o.name));
        match origin {
            Some(o) => format!("{} (path {})", o.name, o.last().path),
            None => format!("status {status}, no origin"),
        }
    }

    /// Sends every probe to both and asserts the same answer; returns how many were compared.
    fn compare(&self, port: u16, probes: &[Probe]) -> usize {
        for p in probes {
            let nginx = self.answer(p, port, false);
            let gateway = self.answer(p, port, true);
            assert_eq!(
                gateway, nginx,
                "{} {}{} {:?}",
                port, p.host, p.path, p.headers
            );
            assert!(
                !nginx.starts_with("status"),
                "a probe that reaches an origin or redirects: {nginx}"
            );
        }
        probes.len()
    }
}

/// The seed: every host and path to v1, both ways.
#[test]
fn reverse_check_seed() {
    let pair = start_pair("seed", &[80], true, &[]);
    let n = pair.compare(
        80,
        &[
            plain("tools2online.com", "/", &[]),
            plain(
                "tools2online.com",
                "/some/page?q=1",
                &[("Cookie", "canary_user=alice")],
            ),
            plain("other.example", "/x", &[]),
        ],
    );
    assert_eq!(n, 3);
}

/// The canary idioms: VIPs by cookie (listed, and by the map's regexes, an exact entry
/// winning over a regex that also matches it, `~*` ignoring case), the QA header, the
/// `if ($http_x_canary = "1")` switch (and the later `if` winning over it), anonymous
/// requests. (Users decided by split_clients are left out: nginx's hash and the gateway's
/// pick different users, as the report says; the shares are checked by the table tests.)
#[test]
fn reverse_check_canary() {
    let pair = start_pair("canary", &[8080], true, &[]);
    let n = pair.compare(
        8080,
        &[
            plain("shop.example.com", "/", &[("Cookie", "uid=alice")]),
            plain("shop.example.com", "/cart", &[("Cookie", "uid=bob")]),
            plain("shop.example.com", "/", &[("Cookie", "uid=carol")]),
            plain("shop.example.com", "/", &[("Cookie", "uid=vip-zed")]),
            plain("shop.example.com", "/", &[("Cookie", "uid=vip-dan")]),
            plain("shop.example.com", "/", &[("Cookie", "uid=QA-7")]),
            plain(
                "shop.example.com",
                "/",
                &[("X-Canary", "1"), ("Cookie", "uid=carol")],
            ),
            plain(
                "shop.example.com",
                "/",
                &[("X-Canary", "2"), ("Cookie", "uid=carol")],
            ),
            plain(
                "shop.example.com",
                "/",
                &[("X-Canary", "1"), ("X-Canary-Group", "v1")],
            ),
            plain("shop.example.com", "/", &[("X-Canary-Group", "v2")]),
            plain(
                "shop.example.com",
                "/",
                &[("X-Canary-Group", "v1"), ("Cookie", "uid=alice")],
            ),
            plain("elsewhere.example", "/", &[("Cookie", "uid=bob")]),
            plain("shop.example.com", "/beta/x", &[]),
            plain("shop.example.com", "/beta/x", &[("X-Beta", "off")]),
            plain("shop.example.com", "/beta/x", &[("X-Beta", "on")]),
        ],
    );
    assert_eq!(n, 15);
    // The regexes and the `if` do decide (nginx agreeing is checked above): each of these
    // goes elsewhere than the map's default would send it.
    for (headers, origin) in [
        (&[("Cookie", "uid=vip-zed")][..], "origin-2 (path /)"),
        (&[("Cookie", "uid=QA-7")][..], "origin-2 (path /)"),
        (&[("Cookie", "uid=vip-dan")][..], "origin-1 (path /)"),
        (
            &[("X-Canary", "1"), ("Cookie", "uid=carol")][..],
            "origin-2 (path /)",
        ),
    ] {
        let probe = plain("shop.example.com", "/", headers);
        assert_eq!(pair.answer(&probe, 8080, true), origin, "{headers:?}");
    }
    let opted_out = plain("shop.example.com", "/beta/x", &[("X-Beta", "off")]);
    assert_eq!(
        pair.answer(&opted_out, 8080, true),
        "origin-1 (path /beta/x)"
    );
    // Without the cookie nginx hashes the empty string, which MurmurHash2 puts in the first
    // share (v2, origin-2); the gateway sends anonymous requests to the default. The report
    // says so on the split_clients line.
    let anonymous = plain("shop.example.com", "/", &[]);
    assert_eq!(pair.answer(&anonymous, 8080, false), "origin-2 (path /)");
    assert_eq!(pair.answer(&anonymous, 8080, true), "origin-1 (path /)");
    let run = import(&[
        fixture("canary/nginx.conf").to_str().expect("utf-8"),
        "-o",
        "/dev/null",
    ]);
    let report = text(&run.stderr);
    let split = report
        .lines()
        .find(|l| l.contains("split_clients"))
        .expect("reported");
    assert!(split.contains("without the cookie"), "{split}");
    assert!(
        report.contains(
            "33 directives: 25 translated, 4 approximated, 4 done by the gateway, 0 not translated"
        ),
        "the regex entries and the `if`s are translated:\n{report}"
    );
}

/// Several sites from glob includes: hosts, the default server, a stripped prefix, an
/// address-only proxy_pass, an allowed client.
#[test]
fn reverse_check_multisite() {
    let pair = start_pair("multisite", &[80], false, &[]);
    pair.compare(
        80,
        &[
            plain("blog.example.com", "/", &[]),
            plain("www.blog.example.com", "/post/1", &[]),
            plain("blog.example.com", "/admin/", &[]),
            plain("api.example.com", "/", &[]),
            plain("api.example.com", "/v1/users?id=3", &[]),
            plain("api.example.com", "/status", &[]),
            plain("unknown.example", "/", &[]),
        ],
    );
}

/// Nginx Proxy Manager's proxy hosts: port 80 redirects to https, 443 proxies by host, and
/// the websocket host carries a session over TLS both ways.
#[test]
fn reverse_check_npm() {
    let pair = start_pair(
        "npm",
        &[80, 443],
        false,
        &["app.example.com", "ws.example.com"],
    );
    pair.compare(80, &[plain("app.example.com", "/login?next=/", &[])]);
    pair.compare(
        443,
        &[
            Probe {
                host: "app.example.com",
                path: "/",
                headers: &[],
                tls: true,
            },
            Probe {
                host: "app.example.com",
                path: "/api/v1/x",
                headers: &[],
                tls: true,
            },
        ],
    );
}

/// OpenResty: what is not Lua answers the same. `/beta/` (decided by Lua, which needs
/// lua-resty-redis, not in Debian's module: nginx answers 500) and `/hello` (served by Lua) are
/// not requests both can serve; the report marks both.
#[test]
fn reverse_check_lua() {
    let pair = start_pair("lua", &[8080], true, &[]);
    pair.compare(
        8080,
        &[
            plain("www.example.com", "/", &[]),
            plain("www.example.com", "/about/team", &[("Cookie", "uid=u1")]),
        ],
    );
}
