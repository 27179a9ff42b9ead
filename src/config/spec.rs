//! The file types: exactly what the YAML may contain, private to the config layer. Unknown
//! keys are refused (`deny_unknown_fields`), so a typo fails at `-t`, not in production.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct FileRoot {
    pub(super) gateway: Option<FileGateway>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGateway {
    pub(super) listen: Vec<FileListen>,
    pub(super) groups: BTreeMap<String, FileGroup>,
    #[serde(default)]
    pub(super) routing: Option<FileRouting>,
    #[serde(default)]
    pub(super) routes: Option<Vec<FileRoute>>,
    #[serde(default)]
    pub(super) decision_header: Option<FileDecisionHeader>,
    #[serde(default)]
    pub(super) demo_origins: Vec<FileDemoOrigin>,
    #[serde(default)]
    pub(super) admin: Option<FileAdmin>,
    #[serde(default)]
    pub(super) metrics: Option<FileMetrics>,
    #[serde(default)]
    pub(super) access_log: Option<FileAccessLog>,
    #[serde(default)]
    pub(super) limits: Option<FileLimits>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(super) store: Option<FileStore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStore {
    pub(super) redis: String,
    #[serde(default)]
    pub(super) prefix: Option<String>,
    #[serde(default)]
    pub(super) resync_interval: Option<String>,
    #[serde(default)]
    pub(super) timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) header_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) tunnel_idle_timeout: Option<String>,
    pub(super) max_request_line: Option<usize>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_headers: Option<usize>,
    pub(super) max_body_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMetrics {
    pub(super) listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAccessLog {
    pub(super) path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdmin {
    pub(super) listen: String,
    pub(super) token: Option<String>,
    pub(super) token_env: Option<String>,
    #[serde(default)]
    pub(super) tokens: Vec<FileAdminToken>,
    pub(super) state_file: Option<PathBuf>,
}

/// A named admin token (`gateway.admin.tokens[i]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdminToken {
    pub(super) name: String,
    pub(super) token: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) role: FileRole,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileRole {
    Operator,
    Viewer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGroup {
    pub(super) servers: Vec<FileServer>,
    #[serde(default)]
    pub(super) selection: Option<FileSelection>,
    #[serde(default)]
    pub(super) health_check: Option<FileHealthCheck>,
    #[serde(default)]
    pub(super) timeouts: Option<FileTimeouts>,
    #[serde(default)]
    pub(super) fallback: Option<String>,
    #[serde(default)]
    pub(super) host_header: Option<String>,
    #[serde(default)]
    pub(super) tls: Option<FileUpstreamTls>,
}

/// `gateway.groups.NAME.tls`: TLS towards the group's servers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstreamTls {
    #[serde(default)]
    pub(super) sni: Option<String>,
    #[serde(default)]
    pub(super) verify: Option<bool>,
    #[serde(default)]
    pub(super) ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) client_cert: Option<PathBuf>,
    #[serde(default)]
    pub(super) client_key: Option<PathBuf>,
    #[serde(default)]
    pub(super) http2: Option<bool>,
}

/// One entry of `gateway.listen`: an address (plaintext HTTP/1.1), or a listener with TLS or
/// a redirect to https.
pub(super) enum FileListen {
    Addr(String),
    Listener(FileListener),
}

// By hand rather than `untagged`, so that a mistake inside a listener (an unknown key, a wrong
// type) is reported as itself, not as "no variant matched".
impl<'de> Deserialize<'de> for FileListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileListen;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an \"IP:port\" string or a listener ({ addr, tls, ... })")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileListen, E> {
                Ok(FileListen::Addr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FileListen, A::Error> {
                FileListener::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(FileListen::Listener)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileListener {
    pub(super) addr: String,
    #[serde(default)]
    pub(super) redirect_https: Option<bool>,
    #[serde(default)]
    pub(super) https_port: Option<u16>,
    #[serde(default)]
    pub(super) tls: Option<FileTls>,
    #[serde(default)]
    pub(super) http2: Option<bool>,
    #[serde(default)]
    pub(super) hsts: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    pub(super) certificates: Vec<FileCertificate>,
    #[serde(default)]
    pub(super) default_certificate: Option<PathBuf>,
    #[serde(default)]
    pub(super) min_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCertificate {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum FileServer {
    Addr(String),
    Weighted(FileWeightedServer),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWeightedServer {
    pub(super) addr: String,
    #[serde(default)]
    pub(super) weight: Option<usize>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileSelection {
    RoundRobin,
    Consistent,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileProbe {
    Tcp,
    Http,
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHealthCheck {
    #[serde(rename = "type")]
    pub(super) probe: FileProbe,
    pub(super) path: Option<String>,
    pub(super) host: Option<String>,
    pub(super) expect_status: Option<u16>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) rise: Option<usize>,
    pub(super) fall: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTimeouts {
    pub(super) connect: Option<String>,
    pub(super) read: Option<String>,
    pub(super) write: Option<String>,
    pub(super) idle: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    pub(super) name: String,
    #[serde(default)]
    pub(super) hosts: Vec<String>,
    #[serde(default)]
    pub(super) paths: Vec<String>,
    #[serde(default)]
    pub(super) strip_prefix: bool,
    pub(super) routing: FileRouting,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRouting {
    #[serde(default = "default_cookie")]
    pub(super) cookie: String,
    pub(super) default: String,
    #[serde(default)]
    pub(super) rules: Vec<FileRule>,
    #[serde(default)]
    pub(super) signing_key: Option<FileKeys>,
    #[serde(default)]
    pub(super) signing_key_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum FileKeys {
    One(String),
    Several(Vec<String>),
}

pub(super) fn default_cookie() -> String {
    "canary_user".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRule {
    pub(super) name: String,
    pub(super) header: Option<String>,
    pub(super) users: Option<Vec<String>>,
    pub(super) users_file: Option<PathBuf>,
    pub(super) percent: Option<f64>,
    pub(super) seed: Option<String>,
    pub(super) group: Option<String>,
    pub(super) header_secret: Option<String>,
    pub(super) from: Option<Vec<String>>,
    pub(super) users_store: Option<String>,
    pub(super) plan: Option<FilePlan>,
}

/// A rollout plan on a percent rule (`gateway.routing.rules[i].plan`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePlan {
    pub(super) steps: Vec<f64>,
    pub(super) hold: String,
    #[serde(default)]
    pub(super) min_requests: Option<u64>,
    pub(super) baseline: String,
    #[serde(default)]
    pub(super) max_error_rate_increase: Option<f64>,
    #[serde(default)]
    pub(super) max_p99_ratio: Option<f64>,
    #[serde(default)]
    pub(super) on_failure: Option<FileOnFailure>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileOnFailure {
    Rollback,
    Pause,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum FileDecisionHeader {
    Enabled(bool),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDemoOrigin {
    pub(super) listen: String,
    pub(super) body: String,
}
