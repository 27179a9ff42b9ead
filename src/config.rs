//! Configuration: one YAML file holds Pingora's server keys at top level and the gateway's own
//! section under `gateway:`. The file is parsed once into private serde types, validated, and
//! turned into typed runtime values. Every error names the file, the key and the value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;
use serde::Deserialize;

pub use crate::cidr::Cidr;
use crate::routing::{percent_to_ppm, GroupId, Matcher, Mode, Router, Rule};
use crate::upstreams::{
    GroupConfig, HealthCheckConfig, HealthProbe, Selection, ServerConfig, Timeouts,
};
use crate::userset::UserSet;

/// The demo configuration that `canary-gateway` runs when no `-c FILE` is given.
pub const DEMO_CONFIG: &str = include_str!("../conf/demo.yaml");
/// Name used for the embedded demo configuration in messages.
pub const DEMO_CONFIG_NAME: &str = "<built-in demo: conf/demo.yaml>";

/// Drain time applied when the file does not set `grace_period_seconds`. Pingora's own default
/// is 300 s, far past the ~10 s after which systemd or `docker stop` kill a process.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 5;
/// Time runtimes get to finish after the grace period when the file does not set it.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything loaded from one configuration file.
pub struct LoadedConfig {
    /// Pingora's server settings, with the gateway's defaults applied where the file is silent.
    pub server: ServerConf,
    pub gateway: GatewayConfig,
}

/// The gateway's validated runtime configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Addresses the proxy listens on.
    pub listen: Vec<String>,
    /// Upstream groups, indexed by [`GroupId`] (same order as `router.group_names`).
    pub groups: Vec<GroupConfig>,
    pub router: Arc<Router>,
    /// Response header that names the chosen group; `None` when turned off.
    pub decision_header: Option<String>,
    /// Built-in demo origins to start in the same process (the demo config only, normally).
    pub demo_origins: Vec<DemoOrigin>,
    /// The admin API, when configured.
    pub admin: Option<AdminConfig>,
    /// Where `GET /metrics` is served, when configured.
    pub metrics_listen: Option<SocketAddr>,
    /// The JSON access log, when configured.
    pub access_log: Option<crate::access_log::Target>,
    /// Limits on client requests.
    pub limits: Limits,
    /// Proxies whose `X-Forwarded-For` is believed when finding the client address.
    pub trusted_proxies: Vec<Cidr>,
    /// The Redis store for shared user sets, when configured.
    pub store: Option<crate::store::StoreConfig>,
    /// Rules whose users come from the store: rule name → set name.
    pub store_sets: BTreeMap<String, String>,
}

/// Limits on client requests (see the README's security section for the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub head: crate::guard::HeadLimits,
    /// Total time allowed for a request body, and for each read of it.
    pub body_timeout: Duration,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: crate::guard::HeadLimits::default(),
            body_timeout: Duration::from_secs(30),
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// The admin API's listener, credentials and state file.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer token every admin request must carry. Never logged or shown.
    pub token: String,
    /// Where changes made through the API are kept, so they survive restarts and reloads.
    pub state_file: Option<PathBuf>,
}

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
pub struct DemoOrigin {
    pub listen: String,
    pub body: String,
}

// ---- file types (private): exactly what the YAML may contain ----

#[derive(Deserialize)]
struct FileRoot {
    gateway: Option<FileGateway>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGateway {
    listen: Vec<String>,
    groups: BTreeMap<String, FileGroup>,
    routing: FileRouting,
    #[serde(default)]
    decision_header: Option<FileDecisionHeader>,
    #[serde(default)]
    demo_origins: Vec<FileDemoOrigin>,
    #[serde(default)]
    admin: Option<FileAdmin>,
    #[serde(default)]
    metrics: Option<FileMetrics>,
    #[serde(default)]
    access_log: Option<FileAccessLog>,
    #[serde(default)]
    limits: Option<FileLimits>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    store: Option<FileStore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStore {
    redis: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    resync_interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_request_line: Option<usize>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_body_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccessLog {
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    listen: String,
    token: Option<String>,
    token_env: Option<String>,
    state_file: Option<PathBuf>,
}

/// Shortest admin token accepted: anything shorter is guessable.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    servers: Vec<FileServer>,
    #[serde(default)]
    selection: Option<FileSelection>,
    #[serde(default)]
    health_check: Option<FileHealthCheck>,
    #[serde(default)]
    timeouts: Option<FileTimeouts>,
    #[serde(default)]
    fallback: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileServer {
    Addr(String),
    Weighted(FileWeightedServer),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWeightedServer {
    addr: String,
    #[serde(default)]
    weight: Option<usize>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum FileSelection {
    RoundRobin,
    Consistent,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum FileProbe {
    Tcp,
    Http,
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealthCheck {
    #[serde(rename = "type")]
    probe: FileProbe,
    path: Option<String>,
    host: Option<String>,
    expect_status: Option<u16>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<usize>,
    fall: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    connect: Option<String>,
    read: Option<String>,
    write: Option<String>,
    idle: Option<String>,
}

/// Health check defaults: applied to a group without `health_check`, and to missing keys.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTH_RISE: usize = 1;
pub const DEFAULT_HEALTH_FALL: usize = 2;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRouting {
    #[serde(default = "default_cookie")]
    cookie: String,
    default: String,
    #[serde(default)]
    rules: Vec<FileRule>,
    #[serde(default)]
    signing_key: Option<FileKeys>,
    #[serde(default)]
    signing_key_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileKeys {
    One(String),
    Several(Vec<String>),
}

/// Shortest accepted cookie signing key.
pub const MIN_SIGNING_KEY_LEN: usize = 16;

fn default_cookie() -> String {
    "canary_user".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: String,
    header: Option<String>,
    users: Option<Vec<String>>,
    users_file: Option<PathBuf>,
    percent: Option<f64>,
    seed: Option<String>,
    group: Option<String>,
    header_secret: Option<String>,
    from: Option<Vec<String>>,
    users_store: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileDecisionHeader {
    Enabled(bool),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDemoOrigin {
    listen: String,
    body: String,
}

/// Default name of the response header that carries the decision.
pub const DEFAULT_DECISION_HEADER: &str = "x-canary-group";

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

    let root: FileRoot = serde_yaml::from_str(text).map_err(|e| err("", yaml_message(&e)))?;
    let gateway = root
        .gateway
        .ok_or_else(|| err("gateway", "the section is missing".into()))?;
    let gateway = validate(gateway, base).map_err(|(key, message)| err(&key, message))?;
    Ok(LoadedConfig { server, gateway })
}

/// serde_yaml's message with the path made to read like our keys (`gateway.routing...`).
fn yaml_message(e: &serde_yaml::Error) -> String {
    e.to_string()
}

type KeyError = (String, String);

fn validate(file: FileGateway, base: &Path) -> Result<GatewayConfig, KeyError> {
    if file.listen.is_empty() {
        return Err(("gateway.listen".into(), "needs at least one address".into()));
    }
    for (i, addr) in file.listen.iter().enumerate() {
        addr.parse::<SocketAddr>().map_err(|e| {
            (
                format!("gateway.listen[{i}]"),
                format!("{addr:?} is not an IP:port address ({e})"),
            )
        })?;
    }

    if file.groups.is_empty() {
        return Err(("gateway.groups".into(), "needs at least one group".into()));
    }
    let group_names: Vec<String> = file.groups.keys().cloned().collect();
    let group_id = |key: String, name: &str| -> Result<GroupId, KeyError> {
        group_names
            .iter()
            .position(|g| g == name)
            .map(GroupId)
            .ok_or_else(|| {
                (
                    key,
                    format!(
                        "{name:?} is not a group (groups: {})",
                        group_names.join(", ")
                    ),
                )
            })
    };
    let mut groups = Vec::with_capacity(file.groups.len());
    for (name, group) in &file.groups {
        groups.push(validate_group(name, group, &group_id)?);
    }
    check_fallback_cycles(&groups)?;

    let routing = &file.routing;
    if routing.cookie.is_empty() || !routing.cookie.bytes().all(is_token_byte) {
        return Err((
            "gateway.routing.cookie".into(),
            format!("{:?} is not a valid cookie name", routing.cookie),
        ));
    }
    let default_group = group_id("gateway.routing.default".into(), &routing.default)?;
    let mut rules = Vec::with_capacity(routing.rules.len());
    for (i, rule) in routing.rules.iter().enumerate() {
        let key = format!("gateway.routing.rules[{i}]");
        if rule.name.is_empty() {
            return Err((format!("{key}.name"), "must not be empty".into()));
        }
        if routing.rules[..i].iter().any(|r| r.name == rule.name) {
            return Err((
                format!("{key}.name"),
                format!(
                    "{:?} is used by an earlier rule; names must be unique",
                    rule.name
                ),
            ));
        }
        rules.push(validate_rule(rule, &key, base, &group_id)?);
    }

    let signing_keys = signing_keys(routing)?;

    let decision_header = match file.decision_header {
        None | Some(FileDecisionHeader::Enabled(true)) => Some(DEFAULT_DECISION_HEADER.into()),
        Some(FileDecisionHeader::Enabled(false)) => None,
        Some(FileDecisionHeader::Name(name)) => {
            Some(header_name(&name).map_err(|m| ("gateway.decision_header".to_string(), m))?)
        }
    };

    let mut demo_origins = Vec::with_capacity(file.demo_origins.len());
    for (i, origin) in file.demo_origins.into_iter().enumerate() {
        origin.listen.parse::<SocketAddr>().map_err(|e| {
            (
                format!("gateway.demo_origins[{i}].listen"),
                format!("{:?} is not an IP:port address ({e})", origin.listen),
            )
        })?;
        demo_origins.push(DemoOrigin {
            listen: origin.listen,
            body: origin.body,
        });
    }

    let admin = file
        .admin
        .map(|admin| validate_admin(admin, base))
        .transpose()?;

    let metrics_listen = file
        .metrics
        .map(|m| {
            m.listen.parse::<SocketAddr>().map_err(|e| {
                (
                    "gateway.metrics.listen".to_string(),
                    format!("{:?} is not an IP:port address ({e})", m.listen),
                )
            })
        })
        .transpose()?;
    let access_log = file.access_log.map(|log| {
        if log.path.as_os_str() == "-" {
            crate::access_log::Target::Stdout
        } else {
            crate::access_log::Target::File(base.join(log.path))
        }
    });

    let store = file.store.map(validate_store).transpose()?;
    let mut store_sets = BTreeMap::new();
    for (i, rule) in routing.rules.iter().enumerate() {
        if let Some(set) = &rule.users_store {
            let key = format!("gateway.routing.rules[{i}].users_store");
            if store.is_none() {
                return Err((key, "needs a `gateway.store` section".into()));
            }
            if set.is_empty() || !set.bytes().all(is_token_byte) {
                return Err((key, format!("{set:?} is not a valid set name")));
            }
            store_sets.insert(rule.name.clone(), set.clone());
        }
    }
    let limits = validate_limits(file.limits.unwrap_or_default())?;
    let trusted_proxies = file
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, c)| Cidr::parse(c).map_err(|m| (format!("gateway.trusted_proxies[{i}]"), m)))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(GatewayConfig {
        store,
        store_sets,
        limits,
        trusted_proxies,
        metrics_listen,
        access_log,
        admin,
        listen: file.listen,
        groups,
        router: Arc::new(Router {
            group_names,
            cookie: routing.cookie.clone(),
            default_group,
            rules,
            mode: Mode::Rules,
            signing_keys,
        }),
        decision_header,
        demo_origins,
    })
}

fn signing_keys(routing: &FileRouting) -> Result<Vec<Box<[u8]>>, KeyError> {
    let (key, keys): (&str, Vec<String>) = match (&routing.signing_key, &routing.signing_key_env) {
        (None, None) => return Ok(Vec::new()),
        (Some(_), Some(_)) => {
            return Err((
                "gateway.routing".into(),
                "set either `signing_key` or `signing_key_env`, not both".into(),
            ))
        }
        (Some(FileKeys::One(k)), None) => ("gateway.routing.signing_key", vec![k.clone()]),
        (Some(FileKeys::Several(ks)), None) => ("gateway.routing.signing_key", ks.clone()),
        (None, Some(var)) => {
            let value = std::env::var(var).map_err(|_| {
                (
                    "gateway.routing.signing_key_env".to_string(),
                    format!("environment variable {var} is not set"),
                )
            })?;
            (
                "gateway.routing.signing_key_env",
                value.split(',').map(|k| k.trim().to_string()).collect(),
            )
        }
    };
    if keys.is_empty() {
        return Err((key.into(), "needs at least one key".into()));
    }
    if keys.iter().any(|k| k.len() < MIN_SIGNING_KEY_LEN) {
        return Err((
            key.into(),
            format!("every key must be at least {MIN_SIGNING_KEY_LEN} bytes (value not shown)"),
        ));
    }
    Ok(keys.into_iter().map(|k| k.into_bytes().into()).collect())
}

fn validate_rule(
    rule: &FileRule,
    key: &str,
    base: &Path,
    group_id: &dyn Fn(String, &str) -> Result<GroupId, KeyError>,
) -> Result<Rule, KeyError> {
    let has_users = rule.users.is_some() || rule.users_file.is_some() || rule.users_store.is_some();
    let kinds = [rule.header.is_some(), has_users, rule.percent.is_some()]
        .iter()
        .filter(|&&k| k)
        .count();
    if kinds != 1 {
        return Err((
            key.to_string(),
            format!(
                "rule {:?} needs exactly one of `header`, `users`/`users_file`/`users_store` or `percent`",
                rule.name
            ),
        ));
    }
    if rule.seed.is_some() && rule.percent.is_none() {
        return Err((
            format!("{key}.seed"),
            "only percent rules take a seed".into(),
        ));
    }
    let target = |what: &str| -> Result<GroupId, KeyError> {
        match &rule.group {
            Some(name) => group_id(format!("{key}.group"), name),
            None => Err((
                format!("{key}.group"),
                format!("a {what} rule needs a target group"),
            )),
        }
    };

    if rule.header.is_none() && (rule.header_secret.is_some() || rule.from.is_some()) {
        return Err((
            key.to_string(),
            "`header_secret` and `from` only go with a `header` rule".into(),
        ));
    }
    if let Some(header) = &rule.header {
        if rule.group.is_some() {
            return Err((
                format!("{key}.group"),
                "a header rule takes its group from the header value; remove `group`".into(),
            ));
        }
        let name = header_name(header).map_err(|m| (format!("{key}.header"), m))?;
        let secret = match &rule.header_secret {
            Some(s) if s.len() < 8 || s.contains(':') => {
                return Err((
                    format!("{key}.header_secret"),
                    "must be at least 8 characters without ':' (value not shown)".into(),
                ))
            }
            other => other.as_ref().map(|s| s.as_bytes().into()),
        };
        let from = rule
            .from
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| Cidr::parse(c).map_err(|m| (format!("{key}.from[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        if rule.from.as_ref().is_some_and(|f| f.is_empty()) {
            return Err((format!("{key}.from"), "needs at least one network".into()));
        }
        return Ok(Rule {
            name: rule.name.clone(),
            matcher: Matcher::Header { name, secret, from },
            group: GroupId(0),
        });
    }

    if has_users {
        let group = target("users")?;
        let mut ids: Vec<u8> = Vec::new();
        for id in rule.users.iter().flatten() {
            ids.extend_from_slice(id.trim().as_bytes());
            ids.push(b'\n');
        }
        if let Some(path) = &rule.users_file {
            let full = base.join(path);
            let text = std::fs::read(&full).map_err(|e| {
                (
                    format!("{key}.users_file"),
                    format!("cannot read {}: {e}", full.display()),
                )
            })?;
            ids.extend_from_slice(&text);
        }
        return Ok(Rule {
            name: rule.name.clone(),
            matcher: Matcher::Users {
                users: Arc::new(UserSet::from_lines(&ids)),
            },
            group,
        });
    }

    let percent = rule.percent.unwrap_or_default();
    let ppm = percent_to_ppm(percent).ok_or_else(|| {
        (
            format!("{key}.percent"),
            format!("{percent} is not in 0..=100"),
        )
    })?;
    let group = target("percent")?;
    let seed = rule.seed.as_deref().unwrap_or(&rule.name);
    Ok(Rule {
        name: rule.name.clone(),
        matcher: Matcher::Percent {
            ppm,
            seed: seed.as_bytes().into(),
        },
        group,
    })
}

fn validate_store(file: FileStore) -> Result<crate::store::StoreConfig, KeyError> {
    if !(file.redis.starts_with("redis://") || file.redis.starts_with("rediss://")) {
        return Err((
            "gateway.store.redis".into(),
            "must be a redis:// URL (value not shown)".into(),
        ));
    }
    let duration = |k: &str, v: &Option<String>, d: Duration| {
        v.as_ref().map_or(Ok(d), |v| {
            positive_duration(v).map_err(|m| (format!("gateway.store.{k}"), m))
        })
    };
    Ok(crate::store::StoreConfig {
        url: file.redis,
        prefix: file.prefix.unwrap_or_else(|| "canary:".into()),
        resync_interval: duration(
            "resync_interval",
            &file.resync_interval,
            Duration::from_secs(60),
        )?,
        timeout: duration("timeout", &file.timeout, Duration::from_secs(2))?,
    })
}

fn validate_limits(file: FileLimits) -> Result<Limits, KeyError> {
    let defaults = Limits::default();
    let key = |k: &str| format!("gateway.limits.{k}");
    let duration = |k: &str, v: &Option<String>, d: Duration| {
        v.as_ref()
            .map_or(Ok(d), |v| positive_duration(v).map_err(|m| (key(k), m)))
    };
    let size = |k: &str, v: Option<usize>, d: usize, min: usize| match v {
        Some(n) if n < min => Err((key(k), format!("{n} is below the minimum {min}"))),
        Some(n) => Ok(n),
        None => Ok(d),
    };
    let head = crate::guard::HeadLimits {
        header_timeout: duration(
            "header_timeout",
            &file.header_timeout,
            defaults.head.header_timeout,
        )?,
        max_request_line: size(
            "max_request_line",
            file.max_request_line,
            defaults.head.max_request_line,
            64,
        )?,
        max_header_bytes: size(
            "max_header_bytes",
            file.max_header_bytes,
            defaults.head.max_header_bytes,
            1024,
        )?,
        max_headers: size(
            "max_headers",
            file.max_headers,
            defaults.head.max_headers,
            8,
        )?,
    };
    Ok(Limits {
        head,
        body_timeout: duration("body_timeout", &file.body_timeout, defaults.body_timeout)?,
        max_body_bytes: file.max_body_bytes.unwrap_or(defaults.max_body_bytes),
    })
}

fn validate_admin(admin: FileAdmin, base: &Path) -> Result<AdminConfig, KeyError> {
    let listen = admin.listen.parse::<SocketAddr>().map_err(|e| {
        (
            "gateway.admin.listen".to_string(),
            format!("{:?} is not an IP:port address ({e})", admin.listen),
        )
    })?;
    let token = match (admin.token, admin.token_env) {
        (Some(token), None) => token,
        (None, Some(var)) => std::env::var(&var).map_err(|_| {
            (
                "gateway.admin.token_env".to_string(),
                format!("environment variable {var} is not set"),
            )
        })?,
        (Some(_), Some(_)) => {
            return Err((
                "gateway.admin".into(),
                "set either `token` or `token_env`, not both".into(),
            ))
        }
        (None, None) => {
            let exposure = if listen.ip().is_loopback() {
                "every admin request needs a bearer token"
            } else {
                "refusing to start an admin listener on a non-loopback address without a token"
            };
            return Err((
                "gateway.admin".into(),
                format!("{exposure}: set `token_env` (or `token`)"),
            ));
        }
    };
    if token.len() < MIN_ADMIN_TOKEN_LEN || token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err((
            "gateway.admin.token".into(),
            format!(
                "the token must be at least {MIN_ADMIN_TOKEN_LEN} visible ASCII characters (value not shown)"
            ),
        ));
    }
    Ok(AdminConfig {
        listen,
        token,
        state_file: admin.state_file.map(|p| base.join(p)),
    })
}

fn validate_group(
    name: &str,
    group: &FileGroup,
    group_id: &dyn Fn(String, &str) -> Result<GroupId, KeyError>,
) -> Result<GroupConfig, KeyError> {
    let key = format!("gateway.groups.{name}");
    if group.servers.is_empty() {
        return Err((format!("{key}.servers"), "needs at least one server".into()));
    }
    let mut servers = Vec::with_capacity(group.servers.len());
    for (i, server) in group.servers.iter().enumerate() {
        let server_key = format!("{key}.servers[{i}]");
        let (addr, weight) = match server {
            FileServer::Addr(addr) => (addr, 1),
            FileServer::Weighted(s) => (&s.addr, s.weight.unwrap_or(1)),
        };
        if !(1..=1000).contains(&weight) {
            return Err((
                format!("{server_key}.weight"),
                format!("{weight} is not in 1..=1000"),
            ));
        }
        let addr = resolve_server(addr).map_err(|m| (server_key.clone(), m))?;
        if servers.iter().any(|s: &ServerConfig| s.addr == addr) {
            return Err((server_key, format!("{addr} is listed twice")));
        }
        servers.push(ServerConfig { addr, weight });
    }

    let health_check = match &group.health_check {
        None => Some(HealthCheckConfig {
            probe: HealthProbe::Tcp,
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            rise: DEFAULT_HEALTH_RISE,
            fall: DEFAULT_HEALTH_FALL,
        }),
        Some(hc) => validate_health_check(hc, &format!("{key}.health_check"))?,
    };

    let t = group.timeouts.as_ref();
    let defaults = Timeouts::default();
    let timeout = |field: &str, value: Option<&String>, default: Duration| {
        value.map_or(Ok(default), |v| {
            positive_duration(v).map_err(|m| (format!("{key}.timeouts.{field}"), m))
        })
    };
    let timeouts = Timeouts {
        connect: timeout(
            "connect",
            t.and_then(|t| t.connect.as_ref()),
            defaults.connect,
        )?,
        read: timeout("read", t.and_then(|t| t.read.as_ref()), defaults.read)?,
        write: timeout("write", t.and_then(|t| t.write.as_ref()), defaults.write)?,
        idle: timeout("idle", t.and_then(|t| t.idle.as_ref()), defaults.idle)?,
    };

    let fallback = match &group.fallback {
        None => None,
        Some(target) if target == name => {
            return Err((
                format!("{key}.fallback"),
                "a group cannot fall back to itself".into(),
            ))
        }
        Some(target) => Some(group_id(format!("{key}.fallback"), target)?),
    };

    Ok(GroupConfig {
        name: name.to_string(),
        servers,
        selection: match group.selection {
            None | Some(FileSelection::RoundRobin) => Selection::RoundRobin,
            Some(FileSelection::Consistent) => Selection::Consistent,
        },
        health_check,
        timeouts,
        fallback,
    })
}

fn validate_health_check(
    hc: &FileHealthCheck,
    key: &str,
) -> Result<Option<HealthCheckConfig>, KeyError> {
    let duration = |field: &str, value: &Option<String>, default: Duration| {
        value.as_ref().map_or(Ok(default), |v| {
            positive_duration(v).map_err(|m| (format!("{key}.{field}"), m))
        })
    };
    let count = |field: &str, value: Option<usize>, default: usize| match value {
        Some(0) => Err((format!("{key}.{field}"), "must be at least 1".to_string())),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let http_only = [
        ("path", hc.path.is_some()),
        ("host", hc.host.is_some()),
        ("expect_status", hc.expect_status.is_some()),
    ];
    let probe = match hc.probe {
        FileProbe::Http => {
            let path = hc.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err((
                    format!("{key}.path"),
                    format!("{path:?} is not a request path"),
                ));
            }
            let expect_status = hc.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                return Err((
                    format!("{key}.expect_status"),
                    format!("{expect_status} is not an HTTP status"),
                ));
            }
            HealthProbe::Http {
                path,
                host: hc.host.clone().unwrap_or_else(|| "localhost".into()),
                expect_status,
            }
        }
        FileProbe::Tcp | FileProbe::None => {
            if let Some((field, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err((
                    format!("{key}.{field}"),
                    "only `type: http` checks take this key".into(),
                ));
            }
            if hc.probe == FileProbe::None {
                return Ok(None);
            }
            HealthProbe::Tcp
        }
    };
    Ok(Some(HealthCheckConfig {
        probe,
        interval: duration("interval", &hc.interval, DEFAULT_HEALTH_INTERVAL)?,
        timeout: duration("timeout", &hc.timeout, DEFAULT_HEALTH_TIMEOUT)?,
        rise: count("rise", hc.rise, DEFAULT_HEALTH_RISE)?,
        fall: count("fall", hc.fall, DEFAULT_HEALTH_FALL)?,
    }))
}

/// Rejects fallback chains that loop (`a → b → a`).
fn check_fallback_cycles(groups: &[GroupConfig]) -> Result<(), KeyError> {
    for (start, group) in groups.iter().enumerate() {
        let mut chain = vec![start];
        let mut next = group.fallback;
        while let Some(GroupId(id)) = next {
            if chain.contains(&id) {
                let names: Vec<&str> = chain
                    .iter()
                    .chain(std::iter::once(&id))
                    .map(|&i| groups[i].name.as_str())
                    .collect();
                return Err((
                    format!("gateway.groups.{}.fallback", group.name),
                    format!("fallback chain loops: {}", names.join(" -> ")),
                ));
            }
            chain.push(id);
            next = groups[id].fallback;
        }
    }
    Ok(())
}

/// Parses a duration with a unit: `250ms`, `2s`, `1m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 2s or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?} needs a unit: ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} must be more than zero")),
        d => Ok(d),
    }
}

/// Resolves `host:port` once, at load time.
fn resolve_server(server: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !server.contains(':') {
        return Err(format!("{server:?} needs a port (host:port)"));
    }
    // Fuzzing must not send DNS queries anywhere.
    if cfg!(fuzzing) {
        return Err(format!(
            "{server:?}: host names are not resolved while fuzzing"
        ));
    }
    server
        .to_socket_addrs()
        .map_err(|e| format!("{server:?} does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{server:?} resolves to no address"))
}

/// Validates an HTTP header name and returns it in lower case.
fn header_name(name: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Reason;

    const GOOD: &str = r#"
version: 1
threads: 2
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    stable: { servers: ["127.0.0.1:10001"] }
    canary: { servers: ["127.0.0.1:10002", "localhost:10003"] }
  routing:
    cookie: canary_user
    default: stable
    rules:
      - name: qa-override
        header: X-Canary-Group
      - name: vip
        users: ["alice", "bob"]
        group: stable
      - name: rollout
        percent: 0.5
        group: canary
"#;

    fn load(text: &str) -> Result<LoadedConfig, ConfigError> {
        load_str(text, "test.yaml", Path::new("."))
    }

    fn error_of(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("config was accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_config_loads_into_typed_values() {
        let loaded = load(GOOD).expect("valid");
        assert_eq!(loaded.server.threads, 2);
        assert_eq!(
            loaded.server.grace_period_seconds,
            Some(DEFAULT_GRACE_PERIOD_SECONDS)
        );
        let gw = loaded.gateway;
        assert_eq!(gw.groups.len(), 2);
        assert_eq!(gw.groups[0].name, "canary"); // groups are kept in name order
        assert_eq!(gw.groups[0].servers.len(), 2);
        assert_eq!(gw.decision_header.as_deref(), Some("x-canary-group"));
        let r = &gw.router;
        assert_eq!(r.group_name(r.default_group), "stable");
        assert!(
            matches!(&r.rules[0].matcher, Matcher::Header { name, .. } if name == "x-canary-group")
        );
        match &r.rules[2].matcher {
            Matcher::Percent { ppm, seed } => {
                assert_eq!(*ppm, 5_000);
                assert_eq!(&**seed, b"rollout", "seed defaults to the rule name");
            }
            other => panic!("not a percent rule: {other:?}"),
        }
        let d = r.decide(Some(b"alice"), &[][..]);
        assert_eq!(
            (r.group_name(d.group), d.reason),
            ("stable", Reason::UserList)
        );
    }

    #[test]
    fn the_demo_config_is_valid() {
        let demo = load_demo().expect("demo config valid");
        assert_eq!(demo.gateway.demo_origins.len(), 2);
    }

    #[test]
    fn grace_period_from_the_file_wins() {
        let text = GOOD.replace("threads: 2", "grace_period_seconds: 30");
        assert_eq!(
            load(&text).expect("valid").server.grace_period_seconds,
            Some(30)
        );
    }

    #[test]
    fn decision_header_setting() {
        let off = GOOD.replace("  routing:", "  decision_header: false\n  routing:");
        assert_eq!(load(&off).expect("valid").gateway.decision_header, None);
        let named = GOOD.replace("  routing:", "  decision_header: X-Route\n  routing:");
        assert_eq!(
            load(&named)
                .expect("valid")
                .gateway
                .decision_header
                .as_deref(),
            Some("x-route")
        );
    }

    /// Each broken config is rejected with the key (and the value) named.
    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "percent: 0.5",
                "percent: 140",
                &["gateway.routing.rules[2].percent", "140"],
            ),
            (
                "percent: 0.5",
                "percent: -1",
                &["gateway.routing.rules[2].percent"],
            ),
            (
                "group: canary",
                "group: canarry",
                &["gateway.routing.rules[2].group", "canarry"],
            ),
            (
                "default: stable",
                "default: nope",
                &["gateway.routing.default", "nope"],
            ),
            (
                "\"127.0.0.1:10001\"",
                "\"127.0.0.1\"",
                &["gateway.groups.stable.servers[0]", "port"],
            ),
            (
                "[\"127.0.0.1:10001\"]",
                "[]",
                &["gateway.groups.stable.servers", "at least one"],
            ),
            (
                "[\"127.0.0.1:8080\"]",
                "[\"localhost:http\"]",
                &["gateway.listen[0]", "localhost:http"],
            ),
            (
                "name: rollout",
                "name: vip",
                &["gateway.routing.rules[2].name", "unique"],
            ),
            (
                "cookie: canary_user",
                "cookie: \"bad cookie\"",
                &["gateway.routing.cookie"],
            ),
            (
                "header: X-Canary-Group",
                "header: \"x canary\"",
                &["gateway.routing.rules[0].header"],
            ),
            ("percent: 0.5", "percnt: 0.5", &["percnt"]),
            ("  listen:", "  lisen: x\n  listen:", &["lisen"]),
            (
                "users: [\"alice\", \"bob\"]",
                "users_file: does/not/exist.txt",
                &["gateway.routing.rules[1].users_file", "does/not/exist.txt"],
            ),
            (
                "        group: stable\n",
                "",
                &["gateway.routing.rules[1].group", "target group"],
            ),
            (
                "header: X-Canary-Group",
                "header: x-a\n        percent: 3",
                &["gateway.routing.rules[0]", "exactly one"],
            ),
            (
                "threads: 2",
                "threads: lots",
                &["invalid server configuration"],
            ),
        ];
        for (from, to, needles) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "test case did not change the config: {from}");
            let message = error_of(&text);
            assert!(message.starts_with("test.yaml: "), "{message}");
            for needle in *needles {
                assert!(
                    message.contains(needle),
                    "{to}: {message:?} lacks {needle:?}"
                );
            }
        }
    }

    const POOLS: &str = r#"
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    a:
      servers: ["127.0.0.1:1", { addr: "127.0.0.1:2", weight: 3 }]
      selection: consistent
      health_check: { type: http, path: /healthz, expect_status: 204, interval: 250ms, timeout: 1s, rise: 2, fall: 3 }
      timeouts: { connect: 1s, read: 30s, write: 1m, idle: 90s }
      fallback: b
    b:
      servers: ["127.0.0.1:3"]
      health_check: { type: none }
      fallback: c
    c:
      servers: ["127.0.0.1:4"]
  routing:
    default: a
"#;

    #[test]
    fn pool_settings_are_typed() {
        let gw = load(POOLS).expect("valid").gateway;
        let a = &gw.groups[0];
        assert_eq!(a.servers[1].weight, 3);
        assert_eq!(a.selection, Selection::Consistent);
        let hc = a.health_check.as_ref().expect("checked");
        assert_eq!(hc.interval, Duration::from_millis(250));
        assert_eq!((hc.rise, hc.fall), (2, 3));
        assert!(
            matches!(&hc.probe, HealthProbe::Http { path, expect_status: 204, .. } if path == "/healthz")
        );
        assert_eq!(a.timeouts.write, Duration::from_secs(60));
        assert_eq!(a.timeouts.idle, Duration::from_secs(90));
        assert_eq!(a.fallback, Some(GroupId(1)));
        assert!(
            gw.groups[1].health_check.is_none(),
            "type: none turns checks off"
        );
        let default_check = gw.groups[2].health_check.as_ref().expect("default check");
        assert_eq!(default_check.probe, HealthProbe::Tcp);
        assert_eq!(default_check.interval, DEFAULT_HEALTH_INTERVAL);
        assert_eq!(gw.groups[2].timeouts, Timeouts::default());
    }

    #[test]
    fn pool_errors_name_the_key() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "fallback: c\n",
                "fallback: a\n",
                &["fallback chain loops: a -> b -> a"],
            ),
            (
                "fallback: b\n",
                "fallback: a\n",
                &["gateway.groups.a.fallback", "itself"],
            ),
            (
                "fallback: b\n",
                "fallback: zz\n",
                &["gateway.groups.a.fallback", "zz"],
            ),
            (
                "weight: 3",
                "weight: 0",
                &["gateway.groups.a.servers[1].weight"],
            ),
            (
                "interval: 250ms",
                "interval: 250",
                &["gateway.groups.a.health_check.interval", "unit"],
            ),
            (
                "interval: 250ms",
                "interval: 0s",
                &["gateway.groups.a.health_check.interval", "more than zero"],
            ),
            (
                "read: 30s",
                "read: soon",
                &["gateway.groups.a.timeouts.read"],
            ),
            (
                "rise: 2",
                "rise: 0",
                &["gateway.groups.a.health_check.rise"],
            ),
            (
                "expect_status: 204",
                "expect_status: 999",
                &["gateway.groups.a.health_check.expect_status"],
            ),
            (
                "path: /healthz",
                "path: healthz",
                &["gateway.groups.a.health_check.path"],
            ),
            (
                "type: none",
                "type: none, path: /x",
                &["gateway.groups.b.health_check.path", "type: http"],
            ),
            ("type: none", "type: ping", &["unknown variant `ping`"]),
            (
                "selection: consistent",
                "selection: random",
                &["unknown variant `random`"],
            ),
            (
                "\"127.0.0.1:3\"",
                "\"127.0.0.1:1\", \"127.0.0.1:1\"",
                &["gateway.groups.b.servers[1]", "twice"],
            ),
        ];
        for (from, to, needles) in cases {
            let text = POOLS.replacen(from, to, 1);
            assert_ne!(text, POOLS, "test case did not change the config: {from}");
            let message = error_of(&text);
            for needle in *needles {
                assert!(
                    message.contains(needle),
                    "{to}: {message:?} lacks {needle:?}"
                );
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("2 days").is_err());
    }

    #[test]
    fn missing_gateway_section() {
        assert!(error_of("version: 1\n").contains("gateway: the section is missing"));
    }

    #[test]
    fn users_file_resolves_against_the_config_folder() {
        let dir = std::env::temp_dir().join(format!("cg-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("vips.txt"), "# vips\ncarol\n\ndave\n").expect("write");
        let text = GOOD.replace(
            "users: [\"alice\", \"bob\"]",
            "users: [alice]\n        users_file: vips.txt",
        );
        let path = dir.join("gw.yaml");
        std::fs::write(&path, text).expect("write");
        let loaded = load_file(&path).expect("valid");
        let r = &loaded.gateway.router;
        for user in ["alice", "carol", "dave"] {
            assert_eq!(
                r.decide(Some(user.as_bytes()), &[][..]).reason,
                Reason::UserList,
                "{user}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
