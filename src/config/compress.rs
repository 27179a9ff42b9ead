//! Validation of `compress` blocks (`gateway.compress`, the default for every route, and
//! `gateway.routes[i].compress`): the algorithms in order of preference, the level, the
//! smallest body compressed and the media types.

use std::sync::Arc;

use super::spec::{CompressSpec, Scalar};
use super::{key_error, KeyError};

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Zstd,
    Br,
    Gzip,
}

impl Coding {
    /// The name in `Accept-Encoding`, `Content-Encoding` and the file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The level `level: default` means: nginx's `gzip_comp_level` 6 and
    /// `brotli_comp_level` 6, and zstd's own default 3.
    fn default_level(self) -> u32 {
        match self {
            Coding::Zstd => 3,
            Coding::Br | Coding::Gzip => 6,
        }
    }
}

/// The media types compressed when `types` is not given.
const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
    "image/svg+xml",
];
/// `min_size` when not given: below about a kilobyte the coding's own header and the CPU
/// cost outweigh the bytes saved.
const DEFAULT_MIN_SIZE: u64 = 1024;
/// The highest level a number may name (the highest gzip knows).
const MAX_LEVEL: i64 = 9;

/// A route's compression, validated: what the response path reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompressConfig {
    /// The codings offered with their levels, in the gateway's order of preference (ties of
    /// the client's q-values go to the earlier one); never empty.
    pub(crate) codings: Vec<(Coding, u32)>,
    /// The level as written (`default` or a number), for `/status`.
    pub(crate) level: String,
    /// A response with a smaller `Content-Length` is not compressed.
    pub(crate) min_size: u64,
    /// Media types, lower case, without parameters; `type/*` matches every subtype.
    pub(crate) types: Vec<String>,
}

impl CompressConfig {
    /// Whether a `Content-Type` value names one of the listed media types (its parameters,
    /// such as `charset`, are ignored).
    pub(crate) fn compresses_type(&self, content_type: &[u8]) -> bool {
        let media = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        self.types.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => {
                media.len() > prefix.len()
                    && media[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            None => media.eq_ignore_ascii_case(t.as_bytes()),
        })
    }
}

/// A route's compression: its own (`own`, under `key`), else the gateway's default
/// (`default`, already validated). `None`: the route compresses nothing.
pub(super) fn route_compress(
    own: Option<&CompressSpec>,
    key: &str,
    default: &Option<Arc<CompressConfig>>,
) -> Result<Option<Arc<CompressConfig>>, KeyError> {
    match own {
        Some(spec) => validate_compress(spec, &format!("{key}.compress")),
        None => Ok(default.clone()),
    }
}

/// One `compress` block (`key` names it in errors); `None` when `algorithms` is empty.
pub(super) fn validate_compress(
    spec: &CompressSpec,
    key: &str,
) -> Result<Option<Arc<CompressConfig>>, KeyError> {
    let level = match &spec.level {
        None => None,
        Some(Scalar::Text(t)) if t == "default" => None,
        Some(Scalar::Number(n)) if (1..=MAX_LEVEL).contains(n) => Some(*n as u32),
        Some(other) => {
            let shown = match other {
                Scalar::Number(n) => n.to_string(),
                Scalar::Text(t) => format!("{t:?}"),
            };
            return Err(key_error(
                format!("{key}.level"),
                format!("{shown} is not `default` or a number from 1 (fastest) to {MAX_LEVEL}"),
            ));
        }
    };
    let names: Vec<&str> = match &spec.algorithms {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => vec!["zstd", "br", "gzip"],
    };
    let mut codings: Vec<(Coding, u32)> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let coding = match name.to_ascii_lowercase().as_str() {
            "zstd" => Coding::Zstd,
            "br" => Coding::Br,
            "gzip" => Coding::Gzip,
            _ => {
                return Err(key_error(
                    format!("{key}.algorithms[{i}]"),
                    format!("{name:?} is not one of zstd, br, gzip"),
                ))
            }
        };
        if codings.iter().any(|(c, _)| *c == coding) {
            return Err(key_error(
                format!("{key}.algorithms[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        codings.push((coding, level.unwrap_or_else(|| coding.default_level())));
    }
    let min_size = match &spec.min_size {
        None => DEFAULT_MIN_SIZE,
        Some(value) => size(value).map_err(|m| key_error(format!("{key}.min_size"), m))?,
    };
    let types = match &spec.types {
        None => DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, t)| media_type(t).map_err(|m| key_error(format!("{key}.types[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if spec.types.as_ref().is_some_and(Vec::is_empty) {
        return Err(key_error(
            format!("{key}.types"),
            "an empty list would compress nothing; give `algorithms: []` to turn compression off"
                .into(),
        ));
    }
    if codings.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(CompressConfig {
        codings,
        level: level.map_or_else(|| "default".into(), |l| l.to_string()),
        min_size,
        types,
    })))
}

/// A size: a whole number of bytes, or one followed by `k` or `m` (1024-based).
fn size(value: &Scalar) -> Result<u64, String> {
    let text = match value {
        Scalar::Number(n) => return u64::try_from(*n).map_err(|_| format!("{n} is negative")),
        Scalar::Text(t) => t.trim(),
    };
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1024),
        Some(b'm') => (&lower[..lower.len() - 1], 1024 * 1024),
        _ => (lower.as_str(), 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is not a size (bytes, or a number with `k` or `m`)"))
}

/// A media type as `type/subtype` or `type/*`, lower-cased.
fn media_type(text: &str) -> Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match lower.split_once('/') {
        Some((kind, sub)) if token(kind) && (sub == "*" || token(sub)) => Ok(lower),
        _ => Err(format!(
            "{text:?} is not a media type (`text/html`, `text/*`), without parameters"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{load_str, ConfigError, LoadedConfig};
    use super::Coding;

    /// Two routes; `DEFAULT` and `COMPRESS` are replaced by each test's lines.
    const ROUTES: &str = r#"
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    web: { servers: ["127.0.0.1:10001"] }
  DEFAULT
  routes:
    - name: site
      hosts: [www.example.com]
      COMPRESS
      routing: { default: web }
    - name: api
      routing: { default: web }
"#;

    fn load(default: &str, compress: &str) -> Result<LoadedConfig, ConfigError> {
        let text = ROUTES
            .replace("DEFAULT", default)
            .replace("COMPRESS", compress);
        load_str(&text, "gw.yaml", Path::new("."))
    }

    /// Each bad value is refused naming its key, down to the list index.
    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "",
                "compress: { algorithms: [gzip, deflate] }",
                "gateway.routes[0].compress.algorithms[1]: \"deflate\" is not one of zstd, br, gzip",
            ),
            (
                "",
                "compress: { algorithms: [gzip, gzip] }",
                "gateway.routes[0].compress.algorithms[1]: \"gzip\" is listed twice",
            ),
            (
                "",
                "compress: { level: 12 }",
                "gateway.routes[0].compress.level: 12 is not `default` or a number",
            ),
            (
                "",
                "compress: { level: best }",
                "gateway.routes[0].compress.level: \"best\" is not `default` or a number",
            ),
            (
                "",
                "compress: { min_size: 1x }",
                "gateway.routes[0].compress.min_size: \"1x\" is not a size",
            ),
            (
                "",
                "compress: { min_size: -1 }",
                "gateway.routes[0].compress.min_size: -1 is negative",
            ),
            (
                "",
                "compress: { types: [text/html, html] }",
                "gateway.routes[0].compress.types[1]: \"html\" is not a media type",
            ),
            (
                "",
                "compress: { types: [] }",
                "gateway.routes[0].compress.types: an empty list",
            ),
            (
                "compress: { algorithms: [lz4] }",
                "",
                "gateway.compress.algorithms[0]: \"lz4\" is not one of",
            ),
            (
                "compress: { gzip: on }",
                "",
                "unknown field `gzip`",
            ),
        ];
        for (default, compress, want) in cases {
            let err = match load(default, compress) {
                Ok(_) => panic!("{default} {compress}: accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(want), "{default} {compress}: got {err}");
        }
    }

    /// A route's own block replaces the default; the other route inherits it; `[]` turns
    /// compression off; sizes and levels are read as written.
    #[test]
    fn own_block_replaces_the_default() {
        let loaded = load(
            "compress: { algorithms: [gzip], level: 4, min_size: 2k }",
            "compress: { algorithms: [br, zstd], types: [text/*, Application/JSON] }",
        )
        .expect("valid");
        let routes = &loaded.gateway.routes;
        let site = routes[0].compress.as_deref().expect("site compresses");
        assert_eq!(site.codings, [(Coding::Br, 6), (Coding::Zstd, 3)]);
        assert_eq!(site.min_size, 1024);
        assert_eq!(site.types, ["text/*", "application/json"]);
        assert!(site.compresses_type(b"text/html; charset=utf-8"));
        assert!(site.compresses_type(b"application/json"));
        assert!(!site.compresses_type(b"image/png"));
        assert!(!site.compresses_type(b"text/"));
        let api = routes[1].compress.as_deref().expect("api inherits");
        assert_eq!(api.codings, [(Coding::Gzip, 4)]);
        assert_eq!(api.min_size, 2048);
        assert!(api.compresses_type(b"TEXT/HTML"));
        assert!(!api.compresses_type(b"text/htmlx"));

        let off = load("compress: {}", "compress: { algorithms: [] }").expect("valid");
        assert!(off.gateway.routes[0].compress.is_none());
        assert!(off.gateway.routes[1].compress.is_some());
        let none = load("", "").expect("valid");
        assert!(none.gateway.routes.iter().all(|r| r.compress.is_none()));
    }
}
