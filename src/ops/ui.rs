//! The operator web page, served by the admin listener under `/ui/` (two rows of the admin
//! API's route table). Its files are part of the binary; the page loads nothing from any other
//! origin and reaches the gateway only through the admin API, with the token the operator typed
//! (kept in `sessionStorage`).

use http::{HeaderValue, Response, StatusCode};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const CHARTS: &str = include_str!("ui/charts.js");
const RULES: &str = include_str!("ui/rules.js");
const PLANS: &str = include_str!("ui/plans.js");
const AUDIT: &str = include_str!("ui/audit.js");
const HOSTS: &str = include_str!("ui/hosts.js");
/// The page's scripts by name, in the order the page loads them.
const SCRIPTS: [(&str, &str); 6] = [
    ("app.js", SCRIPT),
    ("charts.js", CHARTS),
    ("rules.js", RULES),
    ("plans.js", PLANS),
    ("audit.js", AUDIT),
    ("hosts.js", HOSTS),
];
const STYLE: &str = include_str!("ui/app.css");

/// Where the page may load from and talk to: this origin only, no inline script or style, no
/// framing, no form posts elsewhere.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `/ui`: a redirect to `/ui/`, where the page's relative links work.
pub(crate) fn redirect(_: &str) -> Response<Vec<u8>> {
    let mut response = with_headers(super::http_response(
        StatusCode::PERMANENT_REDIRECT,
        "text/plain; charset=utf-8",
        b"/ui/\n".to_vec(),
    ));
    response
        .headers_mut()
        .insert(http::header::LOCATION, HeaderValue::from_static("/ui/"));
    response
}

/// `/ui/{file}`: one of the page's files (`""` is the page itself), or 404 in plain text.
pub(crate) fn file(name: &str) -> Response<Vec<u8>> {
    let script = SCRIPTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, body)| *body);
    let (status, content_type, body) = match (name, script) {
        (_, Some(script)) => (StatusCode::OK, "text/javascript; charset=utf-8", script),
        ("" | "index.html", _) => (StatusCode::OK, "text/html; charset=utf-8", INDEX),
        ("app.css", _) => (StatusCode::OK, "text/css; charset=utf-8", STYLE),
        (_, None) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    };
    with_headers(super::http_response(
        status,
        content_type,
        body.as_bytes().to_vec(),
    ))
}

/// `/favicon.ico`: nothing (204), without a token, so a browser's automatic request is no
/// refusal in the logs.
pub(crate) fn favicon(_: &str) -> Response<Vec<u8>> {
    with_headers(super::http_response(
        StatusCode::NO_CONTENT,
        "text/plain; charset=utf-8",
        Vec::new(),
    ))
}

/// The headers every page response carries.
fn with_headers(mut response: Response<Vec<u8>>) -> Response<Vec<u8>> {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_response_carries_the_headers() {
        let answers = ["", "app.js", "plans.js", "app.css", "nope"].map(file);
        for r in answers.iter().chain([&redirect(""), &favicon("")]) {
            let h = r.headers();
            assert_eq!(h["content-security-policy"], CONTENT_SECURITY_POLICY);
            assert_eq!(h["x-frame-options"], "DENY");
            assert_eq!(h["referrer-policy"], "no-referrer");
        }
        assert_eq!(redirect("").headers()["location"], "/ui/");
        assert_eq!(redirect("").status(), 308);
        assert_eq!(file("nope").status(), 404);
        assert_eq!(favicon("").status(), 204);
        assert_eq!(file("index.html").status(), 200);
    }

    /// The page has no inline script or style, and names no other origin.
    #[test]
    fn the_page_keeps_to_its_own_origin() {
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        for (name, _) in SCRIPTS {
            assert!(INDEX.contains(&format!(r#"<script src="{name}" defer></script>"#)));
            assert_eq!(file(name).status(), 200, "{name}");
        }
        for file in [INDEX, STYLE]
            .into_iter()
            .chain(SCRIPTS.map(|(_, body)| body))
        {
            assert!(!file.contains("http://") || file.contains("http://www.w3.org/2000/svg"));
            assert!(!file.contains("https://"));
            assert!(
                !file.contains("innerHTML"),
                "the DOM is built with textContent"
            );
        }
    }
}
