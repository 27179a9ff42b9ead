//! End-to-end tests of per-route response compression: a real gateway in front of a real
//! origin (a small HTTP/1.1 server in this process) that serves a ~20 KB HTML page and a few
//! responses compression must leave alone. Compressed bodies are decoded with the flate2,
//! brotli and zstd crates and compared byte for byte with the origin's.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";
/// Set by the streaming test once it has received compressed bytes: only then does the origin
/// send the second half of `stream.html`.
static RELEASE: AtomicBool = AtomicBool::new(false);
/// Each half of `stream.html`: text that compresses little, so encoders have output to send.
const HALF: usize = 512 * 1024;

/// Text of `len` bytes from a fixed pseudo-random sequence of letters (little redundancy).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b'a' + ((x >> 33) % 26) as u8
        })
        .collect()
}

/// The page: about 20 KB of HTML with repetition, as a real page has.
fn page() -> Vec<u8> {
    let mut html =
        String::from("<!doctype html>\n<html><head><title>Catalogue</title></head><body><ul>\n");
    let mut i = 0u64;
    while html.len() < 20_000 {
        html.push_str(&format!(
            "<li class=\"item\" data-id=\"{i}\"><a href=\"/items/{i}\">Item {i}</a> costs {}.{:02}</li>\n",
            (i * 7919) % 1000,
            (i * 31) % 100
        ));
        i += 1;
    }
    html.push_str("</ul></body></html>\n");
    html.into_bytes()
}

/// What the origin answers for `path`: status, extra headers, body.
fn answer(path: &str) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
    let html = || ("Content-Type", "text/html; charset=utf-8".to_string());
    let tail = path.rsplit('/').next().unwrap_or_default();
    match tail {
        "page.html" => (200, vec![html(), ("ETag", "\"v1\"".into())], page()),
        "vary.html" => (200, vec![html(), ("Vary", "Cookie".into())], page()),
        "encoded.html" => (
            200,
            vec![html(), ("Content-Encoding", "gzip".into())],
            gzip(&page()),
        ),
        "small.html" => (200, vec![html()], b"<p>short</p>".repeat(10)),
        "image.png" => (200, vec![("Content-Type", "image/png".into())], page()),
        "not-modified.html" => (304, vec![("ETag", "\"v1\"".into())], Vec::new()),
        _ => (
            404,
            vec![("Content-Type", "text/plain".into())],
            b"no".to_vec(),
        ),
    }
}

/// Starts the origin: keep-alive HTTP/1.1, one thread per connection.
fn start_origin() -> SocketAddr {
    let listener = test_listener();
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || serve(listener));
    addr
}

fn serve(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve_connection(stream));
    }
}

fn serve_connection(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
        }
        if path.ends_with("stream.html") {
            if stream_halves(&mut writer).is_err() {
                return;
            }
            continue;
        }
        let (status, headers, body) = answer(&path);
        let mut head = format!("HTTP/1.1 {status} X\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if status != 304 {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(&body);
        }
        if writer.write_all(&out).is_err() {
            return;
        }
    }
}

/// `stream.html`, chunked: the first half, then (once the test says so) the second.
fn stream_halves(writer: &mut TcpStream) -> std::io::Result<()> {
    writer.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    let chunk = |w: &mut TcpStream, data: &[u8]| {
        w.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
        w.write_all(data)?;
        w.write_all(b"\r\n")
    };
    chunk(writer, &noise(HALF, 1))?;
    let waited = Instant::now();
    while !RELEASE.load(Ordering::Acquire) && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    chunk(writer, &noise(HALF, 2))?;
    writer.write_all(b"0\r\n\r\n")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("gunzip");
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        "zstd" => out = zstd::decode_all(body).expect("zstd"),
        other => panic!("unexpected coding {other}"),
    }
    out
}

/// A gateway with a compressing route (`/`) and one without (`/plain/`), and an admin API.
fn start() -> (Gateway, SocketAddr) {
    let origin = start_origin();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gateway = Gateway::start(&format!(
        "  admin: {{ listen: \"{admin}\", token: \"{TOKEN}\" }}\n\
         \x20 groups:\n\
         \x20   web: {{ servers: [\"{origin}\"] }}\n\
         \x20 routes:\n\
         \x20   - name: site\n\
         \x20     compress: {{ algorithms: [zstd, br, gzip], level: default, min_size: 1k,\n\
         \x20                 types: [text/html, text/css, application/javascript, application/json, image/svg+xml] }}\n\
         \x20     routing: {{ default: web }}\n\
         \x20   - name: plain\n\
         \x20     paths: [\"/plain/\"]\n\
         \x20     routing: {{ default: web }}\n"
    ));
    wait_for_port(admin);
    (gateway, admin)
}

/// Each coding is chosen when it is the client's only one, the body decodes to the origin's
/// bytes, `Content-Length` is gone, `Vary` names `Accept-Encoding` and the strong ETag is
/// weakened. Prints the bytes sent for the page by each coding.
#[test]
fn each_coding_is_negotiated_and_decodes_to_the_origin_body() {
    let (gateway, _) = start();
    let original = page();
    let plain = get(gateway.addr, "/page.html", &[]);
    assert_eq!(plain.body, original);
    println!("page: {} bytes as sent by the origin", original.len());
    for coding in ["gzip", "br", "zstd"] {
        let response = get(gateway.addr, "/page.html", &[("Accept-Encoding", coding)]);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-encoding"), Some(coding));
        assert_eq!(response.header("content-length"), None);
        assert_eq!(response.header("vary"), Some("Accept-Encoding"));
        assert_eq!(response.header("etag"), Some("W/\"v1\""));
        assert!(response.body.len() < original.len() / 3, "{coding} body");
        assert_eq!(decode(coding, &response.body), original, "{coding}");
        println!(
            "page: {} bytes with {coding} (level default), {:.1} % of the origin's",
            response.body.len(),
            100.0 * response.body.len() as f64 / original.len() as f64
        );
    }
    // The same on one keep-alive connection: each response framed on its own.
    let mut client = Client::connect(gateway.addr);
    for coding in ["zstd", "gzip", "br"] {
        let response = client.get("/page.html", &[("Accept-Encoding", coding)]);
        assert_eq!(
            decode(coding, &response.body),
            original,
            "{coding} kept alive"
        );
    }
}

/// q-values choose (`q=0` refuses); equal ones go to the route's order; `identity` or no
/// header gets the page as it is, without `Content-Encoding` (but with `Vary`).
#[test]
fn q_values_and_the_route_order_choose_the_coding() {
    let (gateway, _) = start();
    let cases = [
        ("gzip;q=0, br", Some("br")),
        ("gzip, br, zstd", Some("zstd")),
        ("gzip;q=1, br;q=0.5", Some("gzip")),
        ("*", Some("zstd")),
        ("*, zstd;q=0", Some("br")),
        ("identity", None),
        ("gzip;q=0", None),
    ];
    for (accept, want) in cases {
        let response = get(gateway.addr, "/page.html", &[("Accept-Encoding", accept)]);
        assert_eq!(response.header("content-encoding"), want, "{accept}");
        assert_eq!(response.header("vary"), Some("Accept-Encoding"), "{accept}");
        let body = match want {
            Some(coding) => decode(coding, &response.body),
            None => response.body,
        };
        assert_eq!(body, page(), "{accept}");
    }
    let none = get(gateway.addr, "/page.html", &[]);
    assert_eq!(none.header("content-encoding"), None);
    assert_eq!(none.header("etag"), Some("\"v1\""));
    let length = page().len().to_string();
    assert_eq!(none.header("content-length"), Some(length.as_str()));
    assert_eq!(none.body, page());
}

/// Responses compression must not touch: already encoded, HEAD, 304, below `min_size`, an
/// unlisted type, and any response of a route without `compress`.
#[test]
fn responses_compression_must_not_touch_pass_as_they_are() {
    let (gateway, _) = start();
    let accept = [("Accept-Encoding", "gzip, br, zstd")];

    let encoded = get(gateway.addr, "/encoded.html", &accept);
    assert_eq!(encoded.header("content-encoding"), Some("gzip"));
    assert_eq!(encoded.body, gzip(&page()), "passed byte for byte");
    assert_eq!(decode("gzip", &encoded.body), page());

    let not_modified = get(gateway.addr, "/not-modified.html", &accept);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("content-encoding"), None);
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));

    let small = get(gateway.addr, "/small.html", &accept);
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.header("content-length"), Some("120"));
    assert_eq!(small.body, b"<p>short</p>".repeat(10));

    let image = get(gateway.addr, "/image.png", &accept);
    assert_eq!(image.header("content-encoding"), None);
    assert_eq!(image.header("vary"), None);
    assert_eq!(image.body, page());

    let other_route = get(gateway.addr, "/plain/page.html", &accept);
    assert_eq!(other_route.header("content-encoding"), None);
    assert_eq!(other_route.header("vary"), None);
    assert_eq!(other_route.header("etag"), Some("\"v1\""));
    assert_eq!(other_route.body, page());

    // HEAD: the head as the origin sent it, with its length, and no body.
    let mut stream = TcpStream::connect(gateway.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(
            b"HEAD /page.html HTTP/1.1\r\nHost: test.local\r\nAccept-Encoding: gzip\r\n\
              Connection: close\r\n\r\n",
        )
        .expect("write");
    let mut head = String::new();
    stream.read_to_string(&mut head).expect("read until closed");
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!lower.contains("content-encoding"), "{head}");
    assert!(
        lower.contains(&format!("content-length: {}", page().len())),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "no body after the head: {head}");
}

/// An origin's own `Vary` is kept, and `Accept-Encoding` is added beside it.
#[test]
fn vary_is_appended_to_the_origins() {
    let (gateway, _) = start();
    let response = get(gateway.addr, "/vary.html", &[("Accept-Encoding", "gzip")]);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    let vary: Vec<&str> = response
        .headers
        .iter()
        .filter(|(k, _)| k == "vary")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(vary, ["Cookie", "Accept-Encoding"]);
    assert_eq!(decode("gzip", &response.body), page());
}

/// `/status` shows each route's compression; a route without it shows `null`.
#[test]
fn status_shows_the_routes_compression() {
    let (_gateway, admin_addr) = start();
    let status = admin(admin_addr, "GET", "/status", Some(TOKEN), None);
    assert_eq!(status.status, 200);
    let json: Value = serde_json::from_slice(&status.body).expect("json");
    let routes = json["routes"].as_array().expect("routes");
    let route = |name: &str| {
        routes
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("route {name} in {json}"))
    };
    let site = &route("site")["compress"];
    assert_eq!(
        site["algorithms"],
        serde_json::json!(["zstd", "br", "gzip"])
    );
    assert_eq!(site["level"], "default");
    assert_eq!(site["min_size"], 1024);
    assert_eq!(site["types"][0], "text/html");
    assert!(route("plain")["compress"].is_null());
}

/// The body is streamed: compressed bytes of the first half reach the client while the origin
/// still holds back the second half (a gateway that buffered the whole body would send
/// nothing until the origin's 30 s wait ran out, and the read below would fail first).
#[test]
fn compressed_bodies_are_streamed_not_buffered_whole() {
    let (gateway, _) = start();
    let mut whole = noise(HALF, 1);
    whole.extend(noise(HALF, 2));
    for coding in ["gzip", "br", "zstd"] {
        RELEASE.store(false, Ordering::Release);
        let mut stream = TcpStream::connect(gateway.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream
            .write_all(
                format!(
                    "GET /stream.html HTTP/1.1\r\nHost: test.local\r\nAccept-Encoding: {coding}\r\n\
                     Connection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("write");
        let mut received = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        // The head, then at least 1 KiB of the compressed first half, before the release.
        let head_end = loop {
            let n = stream
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("{coding}: nothing streamed before the end: {e}"));
            assert!(n > 0, "{coding}: closed early");
            received.extend_from_slice(&buf[..n]);
            if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                if received.len() > at + 4 + 1024 {
                    break at + 4;
                }
            }
        };
        RELEASE.store(true, Ordering::Release);
        stream.read_to_end(&mut received).expect("the rest");
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-encoding: {coding}")),
            "{head}"
        );
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let body = dechunk(&received[head_end..]);
        assert_eq!(decode(coding, &body), whole, "{coding}");
    }
}

/// The data of a chunked body (no trailers).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).expect("ascii");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Over HTTP/2 (TLS, ALPN) each coding is negotiated as over HTTP/1.1: DATA frames carry the
/// compressed body, which curl (with its own decoders off) saves as it came.
#[test]
fn http2_responses_are_compressed_too() {
    let dir = TempDir::new("compress-h2");
    let ca = common::tls::Ca::new("test CA");
    let cert = ca.issue_p256(dir.path(), "site", "site.test", 0xC1);
    let origin = start_origin();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gateway = Gateway::start_with_listeners(
        &format!(
            "    - addr: \"{tls}\"\n      tls:\n        certificates:\n\
             \x20         - {{ cert: \"{}\", key: \"{}\" }}\n",
            cert.cert.display(),
            cert.key.display()
        ),
        &format!(
            "  groups:\n    web: {{ servers: [\"{origin}\"] }}\n\
             \x20 compress: {{}}\n\
             \x20 routing: {{ default: web }}\n"
        ),
    );
    let resolve = format!("site.test:{}:127.0.0.1", tls.port());
    let url = format!("https://site.test:{}/page.html", tls.port());
    for coding in ["gzip", "br", "zstd"] {
        let body_path = dir.path().join(format!("body.{coding}"));
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-k",
                "--http2",
                "--resolve",
                &resolve,
            ])
            .args(["-H", &format!("Accept-Encoding: {coding}"), "-D", "-", "-o"])
            .arg(&body_path)
            .arg(&url)
            .output()
            .expect("curl is installed by scripts/setup.sh test");
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(head.starts_with("http/2 200"), "{head}");
        assert!(
            head.contains(&format!("content-encoding: {coding}")),
            "{head}"
        );
        assert!(!head.contains("content-length"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        let body = std::fs::read(&body_path).expect("body");
        assert_eq!(decode(coding, &body), page(), "{coding} over h2");
    }
    drop(gateway);
}
