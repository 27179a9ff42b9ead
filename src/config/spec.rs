//! The configuration spec: exactly what the gateway section of the YAML may contain, as public
//! serde types that the file deserializes into and that serialize back into the file's YAML.
//! Unknown keys are refused (`deny_unknown_fields`), so a typo fails at `-t`, not in
//! production. A spec is only text arranged as the file arranges it: `GatewaySpec::validate`
//! (written beside the checks, in `gateway`) is the one path from a spec to the typed, checked
//! [`super::GatewayConfig`] the gateway runs; from outside the crate, [`super::load_str`] reads
//! and validates a file's text through it.
//!
//! Optional keys left unset are left out when serialized, so the YAML reads like a file a
//! person wrote and can be pasted into one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::rules::join_rule_key;
pub use super::rules::{FileOnFailure, FilePlan, RuleKindSpec, RuleSpec};
use super::ConfigError;

/// The whole file as far as the gateway reads it: Pingora's keys at the top level are read by
/// Pingora and ignored here.
#[derive(Deserialize)]
pub(super) struct FileRoot {
    pub(super) gateway: Option<GatewaySpec>,
}

/// What [`GatewaySpec::to_yaml`] writes: the gateway section under its key.
#[derive(Serialize)]
struct SpecRoot<'a> {
    gateway: &'a GatewaySpec,
}

/// What an inline secret is replaced with by [`GatewaySpec::redacted`].
pub const REDACTED: &str = "<redacted>";

/// The gateway section of the configuration file (`gateway:`), as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    /// The proxy's listeners (`gateway.listen`), at least one.
    pub listen: Vec<ListenSpec>,
    /// The upstream groups by name (`gateway.groups`), at least one.
    pub groups: BTreeMap<String, GroupSpec>,
    /// One routing block for every host and path; exactly one of `routing` and `routes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingSpec>,
    /// Routes by host and path prefix, each with its routing block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteSpec>>,
    /// The response header naming the chosen group: `false` turns it off, a name renames it
    /// (default `x-canary-group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_header: Option<DecisionHeaderSpec>,
    /// Tiny origins served by the gateway process itself (the demo).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demo_origins: Vec<DemoOriginSpec>,
    /// The admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSpec>,
    /// The metrics endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
    /// The JSON access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSpec>,
    /// Limits on client requests (defaults in docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    /// Networks (`10.0.0.0/8`, an address) whose `X-Forwarded-For` is believed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// The Redis store for shared user sets and control state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSpec>,
    /// Webhooks told about rollout events and admin changes (docs/notify.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifySpec>,
    /// Access control for every route that sets no `access` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,
    /// Request rate limits for every route that sets none of its own (`rate_limits`, not
    /// `limits`: `gateway.limits` holds the connection and head limits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitSpec>,
    /// Response compression for every route that sets no `compress` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<CompressSpec>,
    /// Error pages by status (files relative to the configuration file's folder) for every
    /// route that sets none of its own, and for requests no route serves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_pages: BTreeMap<u16, PathBuf>,
    /// `true`: the origin's own responses of a status in `error_pages` are replaced too
    /// (default for every route; default `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept_errors: Option<bool>,
    /// Certificates issued and renewed by ACME for the names in listeners' `tls.acme`
    /// (docs/tls.md#acme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeSpec>,
}

/// `gateway.acme`: the ACME account and how certificates are ordered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSpec {
    /// The CA's directory URL.
    pub directory: String,
    /// The account's contact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Must be `true`: the CA's terms of service are agreed to.
    #[serde(default)]
    pub accept_terms: bool,
    /// `http-01` (default) or `tls-alpn-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// Renew when the certificate expires within this (default `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before: Option<String>,
    /// Extra roots (PEM) for the directory's TLS, beside the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The first wait after a failed order, doubled up to an hour (default `10s`); also the
    /// least time between two orders for the same names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// The folder for the account key and certificates (default: `acme/` beside the state
    /// file, else beside the configuration file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<PathBuf>,
}

impl GatewaySpec {
    /// Reads the gateway section from a configuration file's text (Pingora's keys beside it
    /// are ignored). Errors name the key; their `file` is left empty for the caller to fill.
    pub fn from_yaml(text: &str) -> Result<GatewaySpec, ConfigError> {
        let root: FileRoot = serde_yaml::from_str(text)
            .map_err(|e| super::key_error(String::new(), join_rule_key(&e.to_string())))?;
        root.gateway
            .ok_or_else(|| super::key_error("gateway".into(), "the section is missing".into()))
    }

    /// The spec as a configuration file: `gateway:` and this section under it, unset optional
    /// keys left out. [`GatewaySpec::from_yaml`] reads it back into an equal spec.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(&SpecRoot { gateway: self })
    }

    /// A copy fit to show: every secret written inline (admin tokens, signing keys, header
    /// secrets, a password in the store URL) replaced by [`REDACTED`]. Secrets referenced by
    /// environment variable name (`token_env`, `signing_key_env`) are kept, being only names.
    pub fn redacted(&self) -> GatewaySpec {
        let mut spec = self.clone();
        let hide = |secret: &mut Option<String>| {
            if secret.is_some() {
                *secret = Some(REDACTED.into());
            }
        };
        if let Some(admin) = &mut spec.admin {
            hide(&mut admin.token);
            admin.tokens.iter_mut().for_each(|t| hide(&mut t.token));
        }
        if let Some(store) = &mut spec.store {
            store.redis = redact_url_password(&store.redis);
        }
        for hook in &mut spec.notify {
            hook.webhook = redact_url_path(&hook.webhook);
        }
        let routes = spec.routes.iter_mut().flatten().map(|r| &mut r.routing);
        for routing in spec.routing.iter_mut().chain(routes) {
            if routing.signing_key.is_some() {
                routing.signing_key = Some(SigningKeys::One(REDACTED.into()));
            }
            for rule in &mut routing.rules {
                if let RuleKindSpec::Header { header_secret, .. } = &mut rule.kind {
                    hide(header_secret);
                }
            }
        }
        spec
    }
}

/// `redis://user:secret@host` → `redis://user:<redacted>@host` (`redis://secret@host` →
/// `redis://<redacted>@host`); a URL without credentials as it is.
fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let Some(at) = url[scheme_end..].rfind('@').map(|i| i + scheme_end) else {
        return url.to_string();
    };
    let (scheme, credentials, host) = (&url[..scheme_end], &url[scheme_end..at], &url[at..]);
    match credentials.split_once(':') {
        Some((name, _)) => format!("{scheme}{name}:{REDACTED}{host}"),
        None => format!("{scheme}{REDACTED}{host}"),
    }
}

/// `https://hooks.example/services/T0/B0/secret` → `https://hooks.example/<redacted>`: a
/// webhook's path (and query) often is its secret, as in Slack's incoming webhooks.
fn redact_url_path(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return REDACTED.to_string();
    };
    match url[scheme_end..].find(['/', '?']) {
        Some(i) => format!("{}/{REDACTED}", &url[..scheme_end + i]),
        None => url.to_string(),
    }
}

/// `gateway.notify[i]`: one webhook and the events it is told about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// `http://host:port/path` or `https://…`: where each event is posted.
    pub webhook: String,
    /// `json` (default: the event's fields and a Slack-compatible `text`) or `slack` (only
    /// `{"text": …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Of `advance`, `pause`, `rollback`, `complete`, `manual` (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// A duration (`5s`): the bound on one delivery attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Attempts after a failed one (default 3), with a doubling pause between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// `gateway.store`: where shared user sets and the control state live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    /// `redis://host:port/db` or `rediss://…`.
    pub redis: String,
    /// Key prefix (default `canary:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A duration (`60s`): how often every set is read again in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_interval: Option<String>,
    /// A duration (`2s`): the bound on each Redis command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `gateway.limits`: limits on client requests; each unset key keeps its default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// A duration: from a request head's first byte to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<String>,
    /// A duration in whole seconds: how long a connection may wait for its next request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<String>,
    /// A duration: the whole request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<String>,
    /// A duration: how long a response may wait for the client to accept any of its bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout: Option<String>,
    /// A duration: an upgraded connection with no traffic for this long is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_headers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Most client connections open at once on each proxy listener that sets no
    /// `max_connections` of its own (default: derived from the open-files limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

/// `gateway.metrics`: where `GET /metrics` is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// `IP:port`.
    pub listen: String,
}

/// `gateway.access_log`: the JSON access log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSpec {
    /// A file (relative to the configuration file's folder), or `-` for standard output.
    pub path: PathBuf,
    /// Write each request's user id (default `false`: only which source gave it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_id: bool,
}

/// `gateway.admin`: the admin API's listener, tokens and state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    /// `IP:port`.
    pub listen: String,
    /// The token named `admin` (role `admin`), inline (prefer `token_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The environment variable holding the token named `admin` (role `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Named tokens with their roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<AdminTokenSpec>,
    /// Where changes made through the API are kept (relative to the file's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// Most connections open at once on the admin listener (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

/// A named admin token (`gateway.admin.tokens[i]`): exactly one of `token` and `token_env`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenSpec {
    /// The name the audit trail shows.
    pub name: String,
    /// The secret, inline (prefer `token_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    pub role: RoleSpec,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSpec {
    /// Configuration writes (`/config/...`) and everything an operator may do.
    Admin,
    /// Live changes and reads.
    Operator,
    Viewer,
}

/// `gateway.groups.NAME`: an upstream group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Its servers, at least one.
    pub servers: Vec<ServerSpec>,
    /// How a server is picked (default `round_robin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionSpec>,
    /// The health check (default: TCP connect every 2 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    /// The group served when none of this group's servers is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The `Host` sent upstream: `client` (default), `server` or a host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    /// TLS towards the servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsSpec>,
    /// The DNS server (`ip:port`) that resolves `name:port` servers; default: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    /// How often `name:port` servers are resolved again (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_interval: Option<String>,
    /// What the servers speak: `h1` (default), `h2` (TLS), `h2c` (cleartext) or `auto` (ALPN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolSpec>,
    /// Most requests in flight on one HTTP/2 connection to a server (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_connection: Option<usize>,
}

/// `gateway.groups.NAME.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolSpec {
    H1,
    H2,
    H2c,
    Auto,
}

/// `gateway.groups.NAME.tls`: TLS towards the group's servers. Files are named by path
/// (relative to the configuration file's folder), never inlined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
}

/// One entry of `gateway.listen`: an address (plaintext HTTP/1.1), or a listener with TLS or
/// a redirect to https.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ListenSpec {
    Addr(String),
    Listener(ListenerSpec),
}

// By hand rather than `untagged`, so that a mistake inside a listener (an unknown key, a wrong
// type) is reported as itself, not as "no variant matched".
impl<'de> Deserialize<'de> for ListenSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ListenSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an \"IP:port\" string or a listener ({ addr, tls, ... })")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ListenSpec, E> {
                Ok(ListenSpec::Addr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ListenSpec, A::Error> {
                ListenerSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ListenSpec::Listener)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A listener written as a map (`gateway.listen[i]`): TLS, or a redirect to https.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// `IP:port`.
    pub addr: String,
    /// Answer every request with a redirect to https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https: Option<bool>,
    /// The port a redirect names (default 443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Offer HTTP/2 by ALPN (default `true` on TLS listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
    /// Accept cleartext HTTP/2 with prior knowledge beside HTTP/1.1 (plaintext listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2c: Option<bool>,
    /// `Strict-Transport-Security` on every response of a TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
    /// Most client connections open at once on this listener (default:
    /// `gateway.limits.max_connections`, else derived from the open-files limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

/// A listener's `tls`: its certificates and protocol floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// Chosen by the client's server name; at least one unless `acme` names some.
    #[serde(default)]
    pub certificates: Vec<CertificateSpec>,
    /// Names whose certificate is issued by ACME (`gateway.acme`), one certificate for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acme: Vec<String>,
    /// The `cert` path of the certificate for clients without a known name (default: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_certificate: Option<PathBuf>,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

/// A certificate and its key, by file path (relative to the configuration file's folder);
/// the key itself is never in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A group's server: `host:port`, or with a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerSpec {
    Addr(String),
    Weighted(WeightedServerSpec),
}

/// A server with a weight (`{ addr, weight }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedServerSpec {
    pub addr: String,
    /// In `1..=1000` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<usize>,
}

/// How a group picks a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionSpec {
    RoundRobin,
    Consistent,
}

/// A health check's kind (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeSpec {
    Tcp,
    Http,
    /// The gRPC health-checking protocol (`grpc.health.v1.Health/Check`).
    Grpc,
    None,
}

/// `gateway.groups.NAME.health_check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    #[serde(rename = "type")]
    pub probe: ProbeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// The service a `grpc` check asks about (default: the empty name, the whole server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// A duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<usize>,
}

/// `gateway.groups.NAME.timeouts`: durations towards the group's servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
}

/// `gateway.routes[i]`: which requests a route serves, and its routing block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// A token, unique among the routes.
    pub name: String,
    /// Host names or `*.` wildcards; none: every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefixes; none: `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Remove the matched prefix from the path sent upstream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    /// Who may use the route; replaces `gateway.access` as a whole (`access: {}`: anyone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,
    /// The route's request rate limits; unset: `gateway.rate_limits`; `[]`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Vec<RateLimitSpec>>,
    /// The route's response compression; replaces `gateway.compress` as a whole
    /// (`compress: { algorithms: [] }`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<CompressSpec>,
    /// The route's error pages by status; replaces `gateway.error_pages` as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_pages: Option<BTreeMap<u16, PathBuf>>,
    /// `true`: the origin's own responses of a status in `error_pages` are replaced too;
    /// unset: `gateway.intercept_errors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept_errors: Option<bool>,
    pub routing: RoutingSpec,
}

/// `compress` (`gateway.compress`, `gateway.routes[i].compress`): which responses are
/// compressed, and how. Every key has a default (docs/configuration.md#compression).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressSpec {
    /// Content codings offered, in the gateway's order of preference: `zstd`, `br`, `gzip`
    /// (default all three, in that order); `[]`: no compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// `default`, or 1 (fastest) to 9 (smallest) for every algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Scalar>,
    /// Responses whose `Content-Length` is below this are sent as they are: bytes, or with
    /// `k` / `m` (1024-based); default `1k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Scalar>,
    /// Media types compressed (`text/html`, or `text/*`); default: a list of text types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

/// A value the file may write as a number or as text (`level: 5`, `level: default`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Number(i64),
    Text(String),
}

/// `access` (`gateway.access`, `gateway.routes[i].access`): which client addresses may use a
/// route, and with `basic_auth` which users. See docs/security.md.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSpec {
    /// Networks or addresses; when present, every other client is denied (`403`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Networks or addresses denied (`403`), checked before `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthSpec>,
}

/// `access.basic_auth`: users from an htpasswd file (bcrypt or SHA-crypt entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSpec {
    /// The htpasswd file (relative to the configuration file's folder), read at load and on
    /// every reload.
    pub users_file: PathBuf,
    /// The realm named in `WWW-Authenticate` (default `restricted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
}

/// One request rate limit (`gateway.rate_limits[i]`, `gateway.routes[i].rate_limits[j]`), as
/// nginx's `limit_req` with `nodelay`: `rate` per key, `burst` more at once, refused with 429.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// A token, unique among the route's limits (the `limit` label of the metric).
    pub name: String,
    /// Path prefixes the limit counts; none: every request of the route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// What a request is counted by: `client_ip`, `user` or `header:NAME`.
    pub key: String,
    /// Requests per unit: `10/s`, `600/m`, `1000/h`.
    pub rate: String,
    /// Requests admitted at once beyond the rate (default 0), as nginx's `burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<i64>,
    /// Counted once for every node through `gateway.store` (Redis).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// A routing block (`gateway.routing`, `gateway.routes[i].routing`): the user cookie, the
/// default group and the ordered rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    /// The cookie carrying the user id (default `canary_user`); the same as
    /// `identity: [{cookie: NAME}]`, and not to be given with `identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Where the user id comes from, in order; the first source with an id wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Vec<IdentitySpec>>,
    /// The group of a request no rule claims.
    pub default: String,
    /// The rules in order, each of one kind ([`RuleSpec`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// The key(s) the cookie is signed with, inline (prefer `signing_key_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeys>,
    /// The environment variable holding the signing key(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_env: Option<String>,
    /// The header that tells the origin the group that served the request (default
    /// `x-canary-group`; `false`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_header: Option<DecisionHeaderSpec>,
}

/// `routing.identity[i]`: one identity source; exactly one of `cookie`, `header`, `jwt` and
/// `assign` (`from` goes with `header`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Client networks the header is believed from (default `gateway.trusted_proxies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign: Option<AssignSpec>,
}

/// `identity[i].jwt`: a verified token's claim is the user id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// The claim that is the user id, a dotted path (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// A JWKS file (relative to the configuration file's folder), re-read on reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
    /// The environment variable holding the HS256 secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    pub algorithms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Allowed clock skew for `exp` and `nbf` (default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<String>,
    /// Read the token from this header instead of `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Read the token from this cookie instead of `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// `identity[i].assign`: the visitor cookie the gateway sets for a visitor with no id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignSpec {
    /// Default `canary_vid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Default `365d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// `lax` (default), `strict` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
    /// `auto` (default: on TLS listeners), `true` or `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<SecureSpec>,
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `assign.secure`: `auto`, or on/off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SecureSpec {
    On(bool),
    Mode(String),
}

/// One signing key, or several (the first signs; all verify).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SigningKeys {
    One(String),
    Several(Vec<String>),
}

/// `gateway.decision_header`: `true`/`false`, or the header's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DecisionHeaderSpec {
    Enabled(bool),
    Name(String),
}

/// `gateway.demo_origins[i]`: a tiny origin answering every request with `body`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoOriginSpec {
    /// `IP:port`.
    pub listen: String,
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the gateway section knows, each set to a value other than its default.
    const EVERY_KEY: &str = r#"
version: 1
gateway:
  listen:
    - "127.0.0.1:8080"
    - { addr: "127.0.0.1:8081", redirect_https: true, https_port: 8443, max_connections: 100 }
    - addr: "127.0.0.1:8443"
      http2: false
      max_connections: 2000
      hsts: "max-age=31536000; includeSubDomains"
      tls:
        min_version: "1.3"
        default_certificate: certs/b.pem
        certificates:
          - { cert: certs/a.pem, key: certs/a.key }
          - { cert: certs/b.pem, key: certs/b.key }
    - { addr: "127.0.0.1:8082", h2c: true }
  groups:
    stable:
      servers: ["127.0.0.1:10001", { addr: "127.0.0.1:10002", weight: 3 }, { addr: "127.0.0.1:10003" }]
      selection: consistent
      health_check: { type: http, path: /health, host: app.internal, expect_status: 204, interval: 500ms, timeout: 250ms, rise: 2, fall: 3 }
      timeouts: { connect: 1s, read: 10s, write: 10s, idle: 60s }
      fallback: canary
      host_header: app.internal:8080
      tls: { sni: app.internal, verify: false, ca: certs/ca.pem, client_cert: certs/c.pem, client_key: certs/c.key, http2: true }
    canary:
      servers: ["127.0.0.1:10004"]
      selection: round_robin
      health_check: { type: none }
    grpc:
      servers: ["127.0.0.1:10005"]
      protocol: h2c
      max_streams_per_connection: 50
      health_check: { type: grpc, service: pkg.Svc }
  routes:
    - name: api
      hosts: [api.example.com, "*.example.net"]
      paths: [/api, /v2]
      strip_prefix: true
      access:
        allow: ["10.0.0.0/8", "192.0.2.7"]
        deny: ["10.9.0.0/16"]
        basic_auth: { users_file: staging.htpasswd, realm: staging }
      rate_limits:
        - { name: login, paths: [/api/login], key: client_ip, rate: 10/s, burst: 20 }
        - { name: per-user, key: user, rate: 100r/m, shared: true }
      routing:
        cookie: uid
        default: stable
        signing_key_env: SIGNING_KEYS
        upstream_header: x-served-group
        rules:
          - { name: qa, header: x-canary-group, header_secret: "qa-secret-value", from: [10.0.0.0/8] }
          - { name: vip, users: [alice, bob], group: stable }
          - { name: listed, users_file: vip-users.txt, group: canary }
          - { name: shared, users_store: beta, group: canary }
          - { name: lane, when: { header: { name: x-canary-group, present: true }, client: [10.0.0.0/8] }, from_header: x-canary-group }
          - { name: app-v5, when: { header: { name: x-app-version, matches: "^5\\." }, cookie: { name: beta, equals: always }, query: { name: region, present: false }, method: [GET, HEAD] }, group: canary }
          - name: rollout
            percent: 12.5
            seed: release-7
            group: canary
            plan: { steps: [5, 25, 100], hold: 10m, min_requests: 50, baseline: stable, max_error_rate_increase: 0.02, max_p99_ratio: 2, on_failure: pause }
    - name: web
      routing:
        default: canary
        signing_key: ["key-one-0123456789", "key-two-0123456789"]
        identity:
          - cookie: uid
          - { header: x-user-id, from: [10.0.0.0/8] }
          - jwt: { claim: user.id, keys_file: jwks.json, algorithms: [RS256, ES256], issuer: "https://auth.example.com", audience: web, leeway: 30s, header: x-token }
          - jwt: { secret_env: JWT_SECRET, algorithms: [HS256], cookie: token }
          - assign: { cookie: canary_vid, max_age: 365d, same_site: lax, secure: auto, http_only: true, domain: example.com, path: / }
  decision_header: X-Route
  demo_origins: [{ listen: "127.0.0.1:10001", body: "version 1" }]
  admin:
    listen: "127.0.0.1:9090"
    token_env: ADMIN_TOKEN
    tokens:
      - { name: ci, token_env: CI_TOKEN, role: operator }
      - { name: reader, token: "reader-token-0123456789", role: viewer }
    state_file: state.json
    max_connections: 8
  metrics: { listen: "127.0.0.1:9091" }
  access_log: { path: "-", user_id: true }
  limits: { header_timeout: 5s, keepalive_timeout: 30s, body_timeout: 20s, send_timeout: 45s, tunnel_idle_timeout: 30m, max_request_line: 4096, max_header_bytes: 16384, max_headers: 50, max_body_bytes: 1048576, max_connections: 5000 }
  trusted_proxies: [10.0.0.0/8, 192.0.2.1]
  rate_limits: [{ name: by-key, key: "header:x-api-key", rate: 50/s, burst: 5 }]
  store: { redis: "redis://app:hunter2-secret@127.0.0.1:6379/0", prefix: "gw:", resync_interval: 30s, timeout: 1s }
  notify:
    - { webhook: "https://hooks.example.com/services/T0/B0/webhook-secret-path", format: slack, events: [rollback, pause], timeout: 2s, retries: 5 }
    - { webhook: "http://127.0.0.1:9999" }
  access: { deny: ["203.0.113.0/24"] }
"#;

    /// The other shapes: one routing block, one signing key, the decision header off.
    const ONE_ROUTING_BLOCK: &str = r#"
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    stable: { servers: ["127.0.0.1:10001"] }
  routing:
    default: stable
    signing_key: "only-key-0123456789"
    upstream_header: false
    rules: [{ name: qa, header: x-canary-group }]
  decision_header: false
  admin: { listen: "127.0.0.1:9090", token: "operator-token-0123456789" }
"#;

    fn round_trip(text: &str) -> (GatewaySpec, String) {
        let spec = GatewaySpec::from_yaml(text).expect("the text parses");
        let yaml = spec.to_yaml().expect("the spec serializes");
        let again = GatewaySpec::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("the written YAML parses back ({e}):\n{yaml}"));
        assert_eq!(again, spec, "the written YAML is the same spec:\n{yaml}");
        (spec, yaml)
    }

    /// Every key survives YAML → spec → YAML → spec.
    #[test]
    fn every_key_round_trips() {
        for text in [EVERY_KEY, ONE_ROUTING_BLOCK] {
            round_trip(text);
        }
        let (spec, _) = round_trip(EVERY_KEY);
        assert_eq!(spec.listen.len(), 4);
        assert_eq!(spec.routes.as_ref().map(Vec::len), Some(2));
    }

    /// Each shipped configuration is written back as a file that parses into the same spec
    /// and validates exactly as the original does.
    #[test]
    fn shipped_configs_round_trip_and_validate_the_same() {
        let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut seen = 0;
        for entry in std::fs::read_dir(&conf).expect("conf/") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let (_, yaml) = round_trip(&text);
            let outcome = |t: &str| {
                super::super::load_str(t, "f.yaml", &conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            assert_eq!(outcome(&yaml), outcome(&text), "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 4, "every conf/*.yaml was read ({seen})");
    }

    /// Unset optional keys are left out, so the YAML reads like a hand-written file.
    #[test]
    fn unset_keys_are_left_out() {
        let (_, yaml) = round_trip(
            "gateway:\n  listen: [\"127.0.0.1:8080\"]\n  groups:\n    stable: { servers: [\"127.0.0.1:9000\"] }\n  routing: { default: stable }\n",
        );
        assert_eq!(
            yaml,
            "gateway:\n  listen:\n  - 127.0.0.1:8080\n  groups:\n    stable:\n      servers:\n      - 127.0.0.1:9000\n  routing:\n    default: stable\n"
        );
    }

    /// Unknown keys are refused with their path, as the file always was.
    #[test]
    fn unknown_keys_are_refused() {
        let e = GatewaySpec::from_yaml(
            &ONE_ROUTING_BLOCK.replace("default: stable", "defualt: stable"),
        )
        .expect_err("a typo");
        assert!(e.message.contains("unknown field `defualt`"), "{e}");
        let e = GatewaySpec::from_yaml("version: 1\n").expect_err("no section");
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("gateway", "the section is missing")
        );
    }

    /// Inline secrets are replaced; variable names, paths and everything else stay.
    #[test]
    fn redacted_hides_every_inline_secret() {
        for text in [EVERY_KEY, ONE_ROUTING_BLOCK] {
            let spec = GatewaySpec::from_yaml(text).expect("parses");
            let yaml = spec.redacted().to_yaml().expect("serializes");
            for secret in [
                "qa-secret-value",
                "key-one-0123456789",
                "key-two-0123456789",
                "reader-token-0123456789",
                "hunter2-secret",
                "only-key-0123456789",
                "operator-token-0123456789",
                "webhook-secret-path",
            ] {
                assert!(!yaml.contains(secret), "{secret} shown:\n{yaml}");
            }
            assert!(yaml.contains(REDACTED), "{yaml}");
        }
        let spec = GatewaySpec::from_yaml(EVERY_KEY)
            .expect("parses")
            .redacted();
        let store = spec.store.as_ref().expect("store");
        assert_eq!(store.redis, "redis://app:<redacted>@127.0.0.1:6379/0");
        assert_eq!(
            spec.notify[0].webhook,
            "https://hooks.example.com/<redacted>"
        );
        assert_eq!(
            spec.notify[1].webhook, "http://127.0.0.1:9999",
            "no path: nothing hidden"
        );
        let admin = spec.admin.as_ref().expect("admin");
        assert_eq!(admin.token_env.as_deref(), Some("ADMIN_TOKEN"));
        assert_eq!(admin.tokens[0].token_env.as_deref(), Some("CI_TOKEN"));
        let routing = &spec.routes.as_ref().expect("routes")[0].routing;
        assert_eq!(routing.signing_key_env.as_deref(), Some("SIGNING_KEYS"));
        assert_eq!(
            spec.listen[2],
            GatewaySpec::from_yaml(EVERY_KEY).expect("parses").listen[2],
            "certificate paths stay"
        );
    }

    #[test]
    fn urls_without_a_password_stay() {
        assert_eq!(
            redact_url_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url_password("redis://:pw@h:1"),
            "redis://:<redacted>@h:1"
        );
        assert_eq!(
            redact_url_password("redis://pw@h:1"),
            "redis://<redacted>@h:1"
        );
        assert_eq!(redact_url_password("not a url"), "not a url");
    }
}
