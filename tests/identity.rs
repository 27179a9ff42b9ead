//! End-to-end tests of `routing.identity`: assigned visitor ids (sticky, one `Set-Cookie`, a
//! ramp only adds, `Secure` on TLS), JWT sources (RS256 and ES256 by `sub`, every invalid
//! token served and counted, keys rotated by reload) and the header source's trust.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;

use base64::Engine;
use common::tls::{connect_with, Ca, KeyKind};
use common::*;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::nid::Nid;
use openssl::rsa::Rsa;

const TOKEN: &str = "identity-test-admin-token";

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The `name=value` of a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap_or_default().trim()
}

/// One fresh cookie jar making `requests` requests on one connection: its cookie pair, the
/// group of its first answer (every answer must agree) and how many `Set-Cookie` it got.
fn run_jar(gw: SocketAddr, requests: usize) -> (String, String, usize) {
    let mut client = Client::connect(gw);
    let mut jar: Option<String> = None;
    let mut groups = Vec::new();
    let mut set_cookies = 0;
    for _ in 0..requests {
        let headers: Vec<(&str, &str)> = jar
            .as_deref()
            .map(|c| vec![("Cookie", c)])
            .unwrap_or_default();
        let r = client.get("/", &headers);
        assert_eq!(r.status, 200);
        let sets: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect();
        set_cookies += sets.len();
        if let Some(set) = sets.first() {
            assert!(set.starts_with("vid="), "{set}");
            assert!(set.contains("Max-Age=2592000"), "{set}");
            assert!(set.contains("SameSite=Lax"), "{set}");
            assert!(set.contains("HttpOnly"), "{set}");
            assert!(!set.contains("Secure"), "plaintext: {set}");
            jar = Some(cookie_pair(set).to_string());
        }
        groups.push(r.text());
    }
    let first = groups[0].clone();
    assert!(groups.iter().all(|g| *g == first), "{groups:?}");
    (jar.expect("a visitor cookie was set"), first, set_cookies)
}

/// Fresh cookie jars against a 10 % rule with `assign`: 1,000 jars × 20 requests, then 4,625
/// more × 2 (5,625 in all, so that the issue's ±2 points is a safe bound). Each jar gets one
/// `Set-Cookie` (on its first response) and stays on one group; the canary share is within ±2
/// points of 10 % (σ over 5,625 jars is 0.40 points: ±2 points is 5.0 σ, which a fair run
/// breaks less than once in a million; over 1,000 jars alone it would be 2.1 σ, broken about 3
/// times in 100). A live ramp to 25 % moves no canary jar back; the share is then within ±3
/// points (σ 0.58 points: 5.2 σ).
#[test]
fn assigned_visitors_are_sticky_and_a_ramp_only_adds() {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let admin_addr = addr();
    let gateway = Gateway::start(&format!(
        "  admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n{}\
         \x20 routing:\n    default: stable\n    identity:\n      - cookie: uid\n\
         \x20     - assign: {{ cookie: vid, max_age: 30d }}\n    rules:\n\
         \x20     - {{ name: rollout, percent: 10, seed: id-test, group: canary }}\n",
        groups_yaml(&[("stable", &stable), ("canary", &canary)])
    ));
    const LONG_JARS: usize = 1000;
    const SHORT_JARS: usize = 4625;
    const THREADS: usize = 5;
    let gw = gateway.addr;
    let plan: Vec<usize> = std::iter::repeat_n(20, LONG_JARS)
        .chain(std::iter::repeat_n(2, SHORT_JARS))
        .collect();
    let jars: Vec<(String, String, usize)> = plan
        .chunks(plan.len().div_ceil(THREADS))
        .map(|chunk| {
            let chunk = chunk.to_vec();
            thread::spawn(move || {
                chunk
                    .into_iter()
                    .map(|n| run_jar(gw, n))
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().expect("jar thread"))
        .collect();
    let total = LONG_JARS + SHORT_JARS;
    assert_eq!(jars.len(), total);
    for (jar, _, sets) in &jars {
        assert_eq!(*sets, 1, "{jar}: exactly one Set-Cookie");
    }
    let ids: std::collections::HashSet<&str> = jars.iter().map(|(j, _, _)| j.as_str()).collect();
    assert_eq!(ids.len(), total, "every visitor id is new");
    let in_canary = jars.iter().filter(|(_, g, _)| g == "canary").count();
    let share = in_canary as f64 / total as f64;
    eprintln!("canary share at 10 %: {share} over {total} jars");
    assert!((0.08..=0.12).contains(&share), "canary share {share}");

    let ramp = admin(
        admin_addr,
        "PUT",
        "/rules/rollout/percent",
        Some(TOKEN),
        Some(r#"{"percent": 25}"#),
    );
    assert_eq!(ramp.status, 200, "{}", ramp.text());
    let after: usize = jars
        .chunks(jars.len().div_ceil(THREADS))
        .map(|chunk| {
            let chunk = chunk.to_vec();
            thread::spawn(move || {
                let mut client = Client::connect(gw);
                let mut in_canary = 0;
                for (jar, before, _) in &chunk {
                    let r = client.get("/", &[("Cookie", jar)]);
                    assert_eq!(
                        r.header("set-cookie"),
                        None,
                        "{jar}: sent back, not set again"
                    );
                    let now = r.text();
                    if before == "canary" {
                        assert_eq!(now, "canary", "{jar} left the canary on a ramp up");
                    }
                    in_canary += usize::from(now == "canary");
                }
                in_canary
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("ramp thread"))
        .sum();
    let share = after as f64 / total as f64;
    eprintln!("canary share after the ramp to 25 %: {share}");
    assert!(
        (0.22..=0.28).contains(&share),
        "canary share after the ramp {share}"
    );

    // A user id from the cookie wins over the visitor cookie (the one switch).
    let user = rollout_user("id-test", 25.0, false);
    let (jar, _, _) = jars
        .iter()
        .find(|(_, g, _)| g == "canary")
        .expect("some jar is in the canary");
    let r = get(gw, "/", &[("Cookie", &format!("{jar}; uid={user}"))]);
    assert_eq!(r.text(), "stable", "the logged-in user's id decides");
    assert_eq!(r.header("set-cookie"), None);
}

/// A TLS listener's visitor cookie is `Secure` (`secure: auto`); the plaintext one's is not.
#[test]
fn a_tls_listener_sets_secure() {
    let dir = TempDir::new("id-tls");
    let ca = Ca::new("id CA");
    let cert = ca.issue(dir.path(), "a", &["a.test"], KeyKind::EcdsaP256, 0xA1, 30);
    let origin = Origin::start("stable");
    let tls = addr();
    let gateway = Gateway::start_with_listeners(
        &format!(
            "    - addr: \"{tls}\"\n      tls:\n        certificates:\n\
             \x20         - {{ cert: \"{}\", key: \"{}\" }}\n",
            cert.cert.display(),
            cert.key.display()
        ),
        &format!(
            "{}  routing:\n    default: stable\n    identity:\n      - assign: {{}}\n",
            groups_yaml(&[("stable", &origin)])
        ),
    );
    let mut stream = connect_with(tls, Some("a.test"), |_| {}).expect("TLS connection");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).ok();
    let set = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie over TLS: {response}"));
    assert!(set.contains("canary_vid="), "{set}");
    assert!(set.contains("; Secure"), "{set}");
    let plain = get(gateway.addr, "/", &[]);
    let set = plain
        .header("set-cookie")
        .expect("a Set-Cookie over plaintext");
    assert!(!set.contains("Secure"), "{set}");
}

/// With a signing key, the visitor id is handed out signed; a visitor cookie written by the
/// visitor (unsigned, or with a wrong tag) is no id: a new one is set.
#[test]
fn signed_visitor_ids_cannot_be_chosen() {
    let stable = Origin::start("stable");
    let gateway = Gateway::start(&format!(
        "{}  routing:\n    default: stable\n    signing_key: \"a-signing-key-0123456789\"\n\
         \x20   identity:\n      - assign: {{ cookie: vid }}\n",
        groups_yaml(&[("stable", &stable)])
    ));
    let first = get(gateway.addr, "/", &[]);
    let set = first.header("set-cookie").expect("a visitor cookie");
    let pair = cookie_pair(set).to_string();
    let value = pair.strip_prefix("vid=").expect("vid");
    let (id, tag) = value.rsplit_once('.').expect("<id>.<tag>");
    assert_eq!(id.len(), 32, "128 bits as hex: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(tag.len(), 43, "an HMAC-SHA256 tag: {tag}");
    let back = get(gateway.addr, "/", &[("Cookie", &pair)]);
    assert_eq!(back.header("set-cookie"), None, "a signed id is kept");
    for forged in [format!("vid={id}"), format!("vid=my-own-id.{tag}")] {
        let r = get(gateway.addr, "/", &[("Cookie", &forged)]);
        assert_eq!(r.status, 200);
        let set = r
            .header("set-cookie")
            .unwrap_or_else(|| panic!("{forged}: not accepted"));
        assert_ne!(cookie_pair(set), forged, "a new id is set");
    }
}

/// Test-time keys: an RSA and a P-256 key, their JWKS, and tokens they sign.
struct Keys {
    rsa_der: Vec<u8>,
    ec_pkcs8: Vec<u8>,
    jwks: String,
}

fn keys(rsa_kid: &str) -> Keys {
    let rsa = Rsa::generate(2048).expect("RSA key");
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let ec = EcKey::generate(&group).expect("EC key");
    let mut ctx = BigNumContext::new().expect("bn ctx");
    let point = ec
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .expect("point");
    let (x, y) = point[1..].split_at(32);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"{rsa_kid}","alg":"RS256","n":"{}","e":"{}"}},{{"kty":"EC","kid":"ec-1","crv":"P-256","x":"{}","y":"{}"}}]}}"#,
        b64(&rsa.n().to_vec()),
        b64(&rsa.e().to_vec()),
        b64(x),
        b64(y),
    );
    let ec_pkcs8 = openssl::pkey::PKey::from_ec_key(ec)
        .expect("pkey")
        .private_key_to_pkcs8()
        .expect("pkcs8");
    Keys {
        rsa_der: rsa.private_key_to_der().expect("der"),
        ec_pkcs8,
        jwks,
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str, extra: &[(&str, serde_json::Value)]) -> serde_json::Value {
    let mut c = serde_json::json!({
        "sub": sub, "iss": "https://auth.test", "aud": "web", "exp": now() + 600,
    });
    for (k, v) in extra {
        c[*k] = v.clone();
    }
    c
}

fn rs256(keys: &Keys, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(&keys.rsa_der),
    )
    .expect("RS256 token")
}

fn es256(keys: &Keys, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("ec-1".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&keys.ec_pkcs8),
    )
    .expect("ES256 token")
}

/// A token signed with HS256 using `secret` (an "HS256 with the RSA public key" attack passes
/// the public key's bytes here).
fn hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 token")
}

/// Valid RS256 and ES256 tokens route by `sub`; every invalid token is served by the next
/// source (here: anonymous, the default group), counted `jwt_invalid`; a reload rotates keys.
#[test]
fn jwt_tokens_route_by_sub_and_invalid_ones_are_no_id() {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let dir = TempDir::new("id-jwt");
    let jwks_path = dir.path().join("jwks.json");
    let first = keys("rsa-1");
    std::fs::write(&jwks_path, &first.jwks).expect("write jwks");
    let metrics = addr();
    let gateway = Gateway::start(&format!(
        "  metrics: {{ listen: \"{metrics}\" }}\n{}\
         \x20 routing:\n    default: stable\n    identity:\n      - jwt:\n\
         \x20         claim: sub\n          keys_file: \"{}\"\n          algorithms: [RS256, ES256]\n\
         \x20         issuer: https://auth.test\n          audience: web\n          leeway: 5s\n\
         \x20   rules:\n      - {{ name: testers, users: [alice, erin], group: canary }}\n",
        groups_yaml(&[("stable", &stable), ("canary", &canary)]),
        jwks_path.display()
    ));
    let with = |token: &str| {
        let r = get(
            gateway.addr,
            "/",
            &[("Authorization", &format!("Bearer {token}"))],
        );
        assert_eq!(r.status, 200, "never an error page");
        r.text()
    };
    assert_eq!(
        with(&rs256(&first, "rsa-1", &claims("alice", &[]))),
        "canary"
    );
    assert_eq!(with(&es256(&first, &claims("erin", &[]))), "canary");
    assert_eq!(with(&rs256(&first, "rsa-1", &claims("bob", &[]))), "stable");
    // Verified once, then from the cache: the same answer.
    assert_eq!(
        with(&rs256(&first, "rsa-1", &claims("alice", &[]))),
        "canary"
    );

    let other = keys("rsa-1");
    let rsa_public_der = Rsa::private_key_from_der(&first.rsa_der)
        .expect("rsa")
        .public_key_to_der_pkcs1()
        .expect("public der");
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let invalid = [
        (
            "expired",
            rs256(
                &first,
                "rsa-1",
                &claims("alice", &[("exp", (now() - 600).into())]),
            ),
        ),
        (
            "future nbf",
            rs256(
                &first,
                "rsa-1",
                &claims("alice", &[("nbf", (now() + 600).into())]),
            ),
        ),
        (
            "wrong issuer",
            rs256(
                &first,
                "rsa-1",
                &claims("alice", &[("iss", "https://evil.test".into())]),
            ),
        ),
        (
            "wrong audience",
            rs256(&first, "rsa-1", &claims("alice", &[("aud", "api".into())])),
        ),
        (
            "bad signature",
            rs256(&other, "rsa-1", &claims("alice", &[])),
        ),
        (
            "alg none",
            format!(
                "{header_none}.{}.",
                b64(claims("alice", &[]).to_string().as_bytes())
            ),
        ),
        (
            "HS256 with the RSA public key",
            hs256(&rsa_public_der, &claims("alice", &[])),
        ),
        ("algorithm not listed", {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS384);
            header.kid = Some("rsa-1".into());
            jsonwebtoken::encode(
                &header,
                &claims("alice", &[]),
                &jsonwebtoken::EncodingKey::from_rsa_der(&first.rsa_der),
            )
            .expect("RS384")
        }),
        ("garbage", "garbage".to_string()),
    ];
    let series = "gateway_identity_total{route=\"default\",source=\"jwt_invalid\"}";
    let counted = || metric_value(&get(metrics, "/metrics", &[]).text(), series);
    let before = counted();
    for (what, token) in &invalid {
        assert_eq!(with(token), "stable", "{what}: no id, default group");
    }
    assert_eq!(
        counted() - before,
        invalid.len() as f64,
        "each invalid token counted"
    );
    let jwt_series = "gateway_identity_total{route=\"default\",source=\"jwt\"}";
    assert_eq!(
        metric_value(&get(metrics, "/metrics", &[]).text(), jwt_series),
        4.0
    );

    // Rotation: new keys in the file, a reload, and the new key verifies, the old one not.
    let second = keys("rsa-2");
    std::fs::write(&jwks_path, &second.jwks).expect("rewrite jwks");
    gateway.signal("HUP");
    let fresh = rs256(&second, "rsa-2", &claims("alice", &[]));
    wait_until("the reload reads the new keys", READY_TIMEOUT, || {
        with(&fresh) == "canary"
    });
    assert_eq!(
        with(&rs256(&first, "rsa-1", &claims("alice", &[]))),
        "stable",
        "the old key no longer verifies (and its cached entry is not used)"
    );
}

/// The header source is believed only from `gateway.trusted_proxies` (its default `from`):
/// ignored when 127.0.0.1 is not in them, believed when it is.
#[test]
fn the_header_source_is_believed_from_trusted_addresses_only() {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let logs = TempDir::new("id-logs");
    let start = |trusted: &str, admin_addr: SocketAddr, log: &str| {
        Gateway::start(&format!(
            "  trusted_proxies: [\"{trusted}\"]\n\
             \x20 admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n\
             \x20 access_log: {log}\n{}\
             \x20 routing:\n    default: stable\n    identity:\n      - header: x-user-id\n\
             \x20   rules:\n      - {{ name: testers, users: [alice], group: canary }}\n",
            groups_yaml(&[("stable", &stable), ("canary", &canary)])
        ))
    };
    let untrusted_log = logs.path().join("untrusted.log");
    let trusted_log = logs.path().join("trusted.log");
    let untrusted = start(
        "10.0.0.0/8",
        addr(),
        &format!("{{ path: \"{}\" }}", untrusted_log.display()),
    );
    let admin_addr = addr();
    let trusted = start(
        "127.0.0.0/8",
        admin_addr,
        &format!("{{ path: \"{}\", user_id: true }}", trusted_log.display()),
    );
    let ask = |g: &Gateway| get(g.addr, "/", &[("X-User-Id", "alice")]).text();
    assert_eq!(ask(&trusted), "canary", "believed from a trusted address");
    assert_eq!(ask(&untrusted), "stable", "ignored from any other");
    // Through a trusted proxy, the proxy that sent the header is what `from` checks, not the
    // client address behind it.
    let forwarded = get(
        trusted.addr,
        "/",
        &[("X-User-Id", "alice"), ("X-Forwarded-For", "203.0.113.9")],
    );
    assert_eq!(forwarded.text(), "canary", "sent by a trusted proxy");

    // The access log says which source gave the id; the id itself only with `user_id: true`.
    let line_of = |path: &std::path::Path| {
        let mut line = String::new();
        wait_until("an access log line", READY_TIMEOUT, || {
            line = std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            !line.is_empty()
        });
        serde_json::from_str::<serde_json::Value>(&line).expect("a JSON line")
    };
    let trusted_line = line_of(&trusted_log);
    assert_eq!(trusted_line["identity"], "header", "{trusted_line}");
    assert_eq!(trusted_line["user_id"], "alice", "{trusted_line}");
    let untrusted_line = line_of(&untrusted_log);
    assert_eq!(untrusted_line["identity"], "none", "{untrusted_line}");
    assert!(untrusted_line.get("user_id").is_none(), "{untrusted_line}");

    // Explain says which source gave the id, for the client address it is given.
    let explain = |client: &str| {
        let r = admin(
            admin_addr,
            "GET",
            &format!("/explain?header.x-user-id=alice&client={client}"),
            Some(TOKEN),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        (v["identity"].clone(), v["group"].clone())
    };
    assert_eq!(explain("127.0.0.1"), ("header".into(), "canary".into()));
    let status = admin(admin_addr, "GET", "/status", Some(TOKEN), None);
    let status: serde_json::Value = serde_json::from_slice(&status.body).expect("json");
    assert_eq!(
        status["routes"][0]["identity"],
        serde_json::json!(["header:x-user-id"]),
        "{status}"
    );
    assert_eq!(explain("192.0.2.1"), ("none".into(), "stable".into()));
}
