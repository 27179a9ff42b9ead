//! Configuration: one YAML file holds Pingora's server keys at top level and the gateway's own
//! section under `gateway:`. The section is parsed once into the public, serializable spec
//! ([`spec::GatewaySpec`], what the file says and what `GET /config` shows), validated section
//! by section (`gateway`, `routing`, `groups`) by `GatewaySpec::validate`, and turned
//! into the typed runtime values below. Every error names the file, the key and the value.
//!
//! Above `routing` and `upstreams`, whose types it builds; nothing on the request path reads
//! the spec.

mod access;
pub(crate) mod acme;
mod certificates;
mod compress;
mod gateway;
mod groups;
mod identity;
pub mod import;
mod notify;
pub mod objects;
mod pages;
mod parse;
mod pem;
mod ratelimit;
mod routing;
mod rules;
pub mod spec;
#[cfg(test)]
mod tests;
mod tls;
pub(crate) mod uploaded;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;

use crate::routing::access::Access;
use crate::routing::routes::{RouteMatch, RouteTable};
pub(crate) use crate::routing::Cidr;
use crate::routing::{Percent, Router};
use crate::upstreams::GroupConfig;
pub use certificates::unix_now;
pub(crate) use certificates::EXPIRY_WARNING_DAYS;
pub(crate) use certificates::{issued_from_pem, validation_certificate};
pub(crate) use compress::{Coding, CompressConfig};
#[cfg(test)]
pub(crate) use notify::WebhookUrl;
pub(crate) use notify::{NotifyEvent, NotifyFormat, NotifyHook};
pub use objects::ConfigObjects;
pub(crate) use pages::{ErrorPage, ErrorPages};
pub(crate) use parse::{check_token, parse_duration};
pub(crate) use pem::{facts_of_der, rfc3339, CertificateFacts};
pub use spec::GatewaySpec;
pub use tls::{certificate_warnings, describe_listeners};
pub(crate) use tls::{Listener, ListenerKind, TlsListener};

/// The demo configuration that `canary-gateway` runs when no `-c FILE` is given.
pub(crate) const DEMO_CONFIG: &str = include_str!("../../conf/demo.yaml");
/// Name used for the embedded demo configuration in messages.
pub const DEMO_CONFIG_NAME: &str = "<built-in demo: conf/demo.yaml>";

/// Drain time applied when the file does not set `grace_period_seconds`. Pingora's own default
/// is 300 s, far past the ~10 s after which systemd or `docker stop` kill a process.
pub(crate) const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 5;
/// Time runtimes get to finish after the grace period when the file does not set it.
pub(crate) const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// A configuration problem: which file, which key, what is wrong. The config layer's one error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}", key_prefix(.key))]
pub struct ConfigError {
    pub(crate) file: String,
    pub(crate) key: String,
    pub(crate) message: String,
}

/// `key: ` before a message, nothing when the problem is the file as a whole.
fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// Everything loaded from one configuration file.
pub struct LoadedConfig {
    /// Pingora's server settings, with the gateway's defaults applied where the file is silent.
    pub server: ServerConf,
    /// The gateway section as written.
    pub spec: GatewaySpec,
    /// The gateway section validated: what `spec` became.
    pub gateway: GatewayConfig,
}

/// The gateway's validated runtime configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The proxy's listeners, in file order.
    pub listen: Vec<Listener>,
    /// Upstream groups, indexed by `GroupId` (same order as every router's `group_names`).
    pub groups: Vec<GroupConfig>,
    /// The routes, in file order; a request is served by exactly one (see `routing::routes`).
    /// A file with the single `gateway.routing` block has one route, `default`, for everything.
    pub routes: Vec<RouteConfig>,
    /// `gateway.error_pages`: the pages of requests no route serves (and the default of
    /// every route without its own); `None`: none.
    pub(crate) error_pages: Option<Arc<ErrorPages>>,
    /// The host and path lookup over `routes`, built once at load; `None` when the one route
    /// serves every host and path.
    pub(crate) route_table: Option<Arc<RouteTable>>,
    /// Each group's name as the decision header's value, indexed by `GroupId` (checked once
    /// here; a clone per request copies nothing).
    pub(crate) group_values: Vec<http::HeaderValue>,
    /// Response header that names the chosen group (lower case); `None` when turned off.
    pub(crate) decision_header: Option<http::HeaderName>,
    /// Built-in demo origins to start in the same process (the demo config only, normally).
    pub(crate) demo_origins: Vec<DemoOrigin>,
    /// The admin API, when configured.
    pub(crate) admin: Option<AdminConfig>,
    /// Where `GET /metrics` is served, when configured.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// The JSON access log, when configured.
    pub(crate) access_log: Option<AccessLogTarget>,
    /// `access_log.user_id`: the log writes each request's user id (off: only its source).
    pub(crate) log_user_id: bool,
    /// Limits on client requests.
    pub(crate) limits: Limits,
    /// Proxies whose `X-Forwarded-For` is believed when finding the client address.
    pub(crate) trusted_proxies: Vec<Cidr>,
    /// The Redis store for shared user sets, when configured.
    pub(crate) store: Option<StoreConfig>,
    /// Webhooks told about rollout events and admin changes (`gateway.notify`).
    pub(crate) notify: Vec<NotifyHook>,
    /// `gateway.acme`: certificates ordered for the listeners' `tls.acme` names.
    pub(crate) acme: Option<acme::AcmeConfig>,
}

/// One route: which requests it serves, and its own rules.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub(crate) name: String,
    pub(crate) matching: RouteMatch,
    /// `true`: the matched prefix is removed from the path sent upstream (`/api/x` → `/x`).
    pub(crate) strip_prefix: bool,
    pub router: Arc<Router>,
    /// Rules whose users come from the store: rule name → set name.
    pub(crate) store_sets: BTreeMap<String, String>,
    /// Rollout plans of this route's percent rules: rule name → plan.
    pub(crate) plans: BTreeMap<String, PlanConfig>,
    /// Who may use the route (its own `access`, else `gateway.access`); `None`: anyone.
    pub(crate) access: Option<Arc<Access>>,
    /// The route's request rate limits (its own, else `gateway.rate_limits`); empty: none.
    pub(crate) rate_limits: Vec<RateLimitConfig>,
    /// How the route's responses are compressed (its own `compress`, else
    /// `gateway.compress`); `None`: not at all (the response pays one `Option` check).
    pub(crate) compress: Option<Arc<CompressConfig>>,
    /// The route's error pages (its own, else `gateway.error_pages`); `None`: none.
    pub(crate) error_pages: Option<Arc<ErrorPages>>,
    /// `routing.upstream_header`: the header that carries the served group to the origin;
    /// `None`: not sent.
    pub(crate) upstream_header: Option<http::HeaderName>,
}

/// One request rate limit of a route (docs/configuration.md#rate-limits): GCRA with nginx's
/// `limit_req ... nodelay` meaning: a key may send `burst + 1` requests at once, then one per
/// `interval`; a request over it is answered 429 and never reaches the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateLimitConfig {
    /// Unique among the route's limits.
    pub(crate) name: String,
    /// Normalized path prefixes the limit counts; empty: every request of the route.
    pub(crate) paths: Vec<String>,
    pub(crate) key: LimitKey,
    /// The rate as written (`10/s`), for `/status`.
    pub(crate) rate: String,
    /// Time between two requests at the rate (GCRA's emission interval), at least 1 µs.
    pub(crate) interval: Duration,
    /// Requests admitted at once beyond the rate.
    pub(crate) burst: u32,
    /// Counted across every node through `gateway.store`.
    pub(crate) shared: bool,
    /// From `gateway.rate_limits`: one count for every route that inherits it (as an nginx
    /// zone used in several locations), not one per route.
    pub(crate) gateway_wide: bool,
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LimitKey {
    /// The client address, resolved through `trusted_proxies` (the `X-Real-IP` the origin gets).
    ClientIp,
    /// The verified user id from the route's cookie; a request without one is counted by its
    /// client address.
    User,
    /// A request header's value; a request without the header is counted by its client
    /// address.
    Header(http::HeaderName),
}

impl LimitKey {
    /// The key as the file writes it.
    pub(crate) fn describe(&self) -> String {
        match self {
            LimitKey::ClientIp => "client_ip".into(),
            LimitKey::User => "user".into(),
            LimitKey::Header(name) => format!("header:{name}"),
        }
    }
}

/// A rollout plan: the steps a percent rule walks up, and the figures each step must show
/// before the next (`gateway.routes[i].routing.rules[j].plan`, see docs/rollouts.md).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlanConfig {
    /// The percentages, strictly increasing, each in `0..=100` (the first above 0).
    pub(crate) steps: Vec<Percent>,
    /// The least time at each step.
    pub(crate) hold: Duration,
    /// The least number of canary requests in a step before it is judged.
    pub(crate) min_requests: u64,
    /// The rule's group (the canary) and the group it is compared with.
    pub(crate) group: String,
    pub(crate) baseline: String,
    /// Largest allowed canary 5xx share minus baseline 5xx share (`0.01`: one point).
    pub(crate) max_error_rate_increase: f64,
    /// Largest allowed canary p99 latency ÷ baseline p99 latency.
    pub(crate) max_p99_ratio: f64,
    /// Largest allowed canary median latency ÷ baseline median (`max_median_ratio`); `None`
    /// (the default) turns the median check off. Sub-millisecond medians move with the load
    /// on each group's servers, so the check is only for plans that ask for it.
    pub(crate) max_median_ratio: Option<f64>,
    pub(crate) on_failure: OnFailure,
}

/// What a plan does when a step's figures break a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFailure {
    /// The rule's percent goes to 0 and the plan stops.
    Rollback,
    /// The plan holds its step until resumed or aborted.
    Pause,
}

/// Defaults of a plan's optional keys.
pub(crate) const DEFAULT_PLAN_MIN_REQUESTS: u64 = 100;
pub(crate) const DEFAULT_PLAN_MAX_ERROR_RATE_INCREASE: f64 = 0.01;
pub(crate) const DEFAULT_PLAN_MAX_P99_RATIO: f64 = 1.5;

impl GatewayConfig {
    /// The route named `name`.
    pub(crate) fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// Every store-backed set the routes use, once each.
    pub(crate) fn store_set_names(&self) -> Vec<String> {
        let mut sets: Vec<String> = self
            .routes
            .iter()
            .flat_map(|r| r.store_sets.values().cloned())
            .collect();
        sets.sort();
        sets.dedup();
        sets
    }
}

/// The name of the one route a file with a plain `gateway.routing` block has.
pub(crate) const DEFAULT_ROUTE: &str = "default";

/// Limits on client requests (defaults in docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) head: HeadLimits,
    /// Deadline for the whole request body, counted from the end of the head.
    pub(crate) body_timeout: Duration,
    /// An upgraded connection (WebSocket) with no traffic either way for this long is closed.
    /// Tunnels have no body limits: this is what bounds them.
    pub(crate) tunnel_idle_timeout: Duration,
    /// Largest request body accepted (413 above it).
    pub(crate) max_body_bytes: u64,
    /// Most client connections open at once on a proxy listener without its own
    /// `max_connections`; `None`: derived from the open-files limit at start.
    pub(crate) max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: HeadLimits::default(),
            body_timeout: Duration::from_secs(30),
            tunnel_idle_timeout: Duration::from_secs(3600),
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: None,
        }
    }
}

/// Limits on a client connection's requests (heads, and the waits between and after them),
/// enforced by the proxy's guard around the connection and by the hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// From the first byte of a request head to its end.
    pub(crate) header_timeout: Duration,
    /// How long a connection may wait for its next request: an HTTP/1.1 connection between
    /// requests, an HTTP/2 connection with no stream open. A whole number of seconds, at
    /// least one (Pingora counts HTTP/1.1 keep-alive in seconds).
    pub(crate) keepalive_timeout: Duration,
    /// How long a response may wait for the client to take any of its bytes: past it an
    /// HTTP/1.1 connection is closed, an HTTP/2 stream reset (its client gives it no window),
    /// and an HTTP/2 connection closed (its socket takes nothing). nginx's `send_timeout`.
    pub(crate) send_timeout: Duration,
    /// Longest request line (method, target, version).
    pub(crate) max_request_line: usize,
    /// Largest request head, request line included.
    pub(crate) max_header_bytes: usize,
    /// Most header lines.
    pub(crate) max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            max_request_line: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
        }
    }
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

/// One admin token: its name (the audit trail's actor), the secret and what it may do.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AdminToken {
    pub(crate) name: String,
    pub(crate) token: String,
    pub(crate) role: Role,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminToken({}, {:?}, ***)", self.name, self.role)
    }
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Everything: configuration writes (`/config/...`) and every live change.
    Admin,
    /// Live changes (percentages, lists, overrides, plans, maintenance, reload) and reads;
    /// no configuration writes.
    Operator,
    /// Read everything, change nothing.
    Viewer,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

/// The name of the admin token set by `gateway.admin.token` / `token_env`.
pub(crate) const DEFAULT_ADMIN_TOKEN_NAME: &str = "admin";

/// Where the shared user sets live (`gateway.store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreConfig {
    /// `redis://host:port/db` (a password in the URL is never shown).
    pub(crate) url: String,
    /// Key prefix: set `vip` is `<prefix>users:vip`; changes go out on `<prefix>events`.
    pub(crate) prefix: String,
    /// Full re-read of every set, to heal anything the channel missed.
    pub(crate) resync_interval: Duration,
    /// Bound on each Redis command.
    pub(crate) timeout: Duration,
}

impl StoreConfig {
    pub(crate) fn set_key(&self, set: &str) -> String {
        format!("{}users:{set}", self.prefix)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// The URL with any password replaced, for logs and `/status`.
    pub(crate) fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &self.url[..scheme], &self.url[at + 1..])
            }
            _ => self.url.clone(),
        }
    }
}

/// The admin API's listener, credentials and state file.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AdminConfig {
    pub(crate) listen: SocketAddr,
    /// The bearer tokens admin requests may carry, with their names and roles (at least one).
    /// Never logged or shown.
    pub(crate) tokens: Vec<AdminToken>,
    /// Where changes made through the API are kept, so they survive restarts and reloads.
    pub(crate) state_file: Option<PathBuf>,
    /// Most connections open at once on the admin listener: its own budget, apart from the
    /// proxy listeners', so a flood on those never keeps operators out.
    pub(crate) max_connections: usize,
}

/// `gateway.admin.max_connections` when unset: operators, their scripts and a few browser
/// tabs of the web page.
pub(crate) const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 32;

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("state_file", &self.state_file)
            .finish()
    }
}

/// A tiny origin served by the gateway process itself, for the demo.
#[derive(Debug, Clone)]
pub(crate) struct DemoOrigin {
    pub(crate) listen: String,
    pub(crate) body: String,
}

/// Shortest admin token accepted: anything shorter is guessable.
pub(crate) const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Health check defaults: applied to a group without `health_check`, and to missing keys.
pub(crate) const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub(crate) const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const DEFAULT_HEALTH_RISE: usize = 1;
pub(crate) const DEFAULT_HEALTH_FALL: usize = 2;

/// Shortest accepted cookie signing key.
pub(crate) const MIN_SIGNING_KEY_LEN: usize = 16;

/// Default name of the response header that carries the decision.
pub(crate) const DEFAULT_DECISION_HEADER: &str = "x-canary-group";

/// Loads and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        key: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_str(&text, &name, base)
}

/// Loads the built-in demo configuration (relative paths resolve against the working directory).
pub fn load_demo() -> Result<LoadedConfig, ConfigError> {
    load_str(DEMO_CONFIG, DEMO_CONFIG_NAME, Path::new("."))
}

/// Loads the built-in demo with its admin changes kept in `state_file` (as if the file said
/// `gateway.admin.state_file: <state_file>`), so a restart keeps them and their audit trail.
pub fn load_demo_keeping(state_file: &Path) -> Result<LoadedConfig, ConfigError> {
    let mut loaded = load_demo()?;
    if let Some(admin) = &mut loaded.spec.admin {
        admin.state_file = Some(state_file.to_path_buf());
    }
    if let Some(admin) = &mut loaded.gateway.admin {
        admin.state_file = Some(state_file.to_path_buf());
    }
    Ok(loaded)
}

/// Where the demo keeps its changes: `$XDG_STATE_HOME/canary-gateway/demo-state.json`, else
/// `$HOME/.local/state/canary-gateway/demo-state.json`, else (no home) under `temp` in a folder
/// named for `user`. Empty variables count as unset, as the XDG specification says.
pub fn demo_state_file(
    xdg_state_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
    temp: &Path,
    user: &str,
) -> PathBuf {
    let set = |v: Option<&std::ffi::OsStr>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    let folder = match (set(xdg_state_home), set(home)) {
        (Some(state), _) if state.is_absolute() => state.join("canary-gateway"),
        (_, Some(home)) => home.join(".local/state/canary-gateway"),
        _ => temp.join(format!("canary-gateway-demo-{user}")),
    };
    folder.join("demo-state.json")
}

/// Parses and validates configuration text; `file` names it in errors and `base` is the folder
/// relative paths resolve against.
pub fn load_str(text: &str, file: &str, base: &Path) -> Result<LoadedConfig, ConfigError> {
    let err = |key: &str, message: String| ConfigError {
        file: file.to_string(),
        key: key.to_string(),
        message,
    };
    let mut server = ServerConf::from_yaml(text).map_err(|e| {
        // Pingora's message repeats the whole file; its cause is the useful part.
        let cause = e
            .root_cause()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        err("", format!("invalid server configuration: {cause}"))
    })?;
    server.grace_period_seconds = server
        .grace_period_seconds
        .or(Some(DEFAULT_GRACE_PERIOD_SECONDS));
    server.graceful_shutdown_timeout_seconds = server
        .graceful_shutdown_timeout_seconds
        .or(Some(DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS));

    let in_file = |e: ConfigError| ConfigError {
        file: file.to_string(),
        ..e
    };
    let spec = GatewaySpec::from_yaml(text).map_err(in_file)?;
    let gateway = spec.validate(base).map_err(in_file)?;
    Ok(LoadedConfig {
        server,
        spec,
        gateway,
    })
}

/// A validation failure inside the gateway section: a [`ConfigError`] whose file [`load_str`]
/// fills in.
type KeyError = ConfigError;

/// The error for `key` (its value in `message`); the file is named by [`load_str`].
fn key_error(key: String, message: String) -> KeyError {
    ConfigError {
        file: String::new(),
        key,
        message,
    }
}
