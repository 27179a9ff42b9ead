//! Upstream groups as pools of servers: one `pingora-load-balancing` balancer per group
//! (weighted round robin or consistent hashing by user id), active health checks (TCP or HTTP),
//! per-group timeouts, and the one fallback walk that picks a server for a request.
//!
//! Above `routing` (group ids), below `config` (which builds [`GroupConfig`]s): knows nothing of
//! configuration files, the live state or the admin API.

mod health;
mod names;
mod peer;
mod pool;
mod probe;
mod servers;
mod walk;

pub(crate) use health::HealthChecker;
pub(crate) use names::resolve_failures;
pub(crate) use pool::Pool;
pub use servers::ServerMode;
pub(crate) use walk::pick;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::utils::tls::{CertKey, WrappedX509};

use crate::routing::{fnv1a64, GroupId};

/// How a group picks a server for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Weighted round robin.
    RoundRobin,
    /// Consistent (ketama) hashing of the user id, so a user keeps hitting the same server.
    Consistent,
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HealthProbe {
    /// A TCP connect.
    Tcp,
    /// `GET path` with `Host: host`, healthy when the status is `expect_status`.
    Http {
        path: String,
        host: String,
        expect_status: u16,
    },
    /// The gRPC health-checking protocol (`grpc.health.v1.Health/Check` for `service`, the
    /// empty name asking about the server as a whole): healthy when the answer is `SERVING`.
    Grpc { service: String },
}

/// What a group's servers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1, one request at a time on each connection.
    H1,
    /// HTTP/2 over TLS (ALPN offers `h2` only).
    H2,
    /// Cleartext HTTP/2 with prior knowledge: the connection starts with the HTTP/2 preface.
    H2c,
    /// Over TLS, whatever ALPN agrees on (`h2` preferred, then `http/1.1`).
    Auto,
}

impl Protocol {
    /// Whether requests may be multiplexed on one connection (HTTP/2 may be spoken).
    pub(crate) fn multiplexed(self) -> bool {
        !matches!(self, Protocol::H1)
    }
}

/// Default of `gateway.groups.NAME.max_streams_per_connection`.
pub(crate) const DEFAULT_MAX_STREAMS: usize = 100;

/// An active health check of every server in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheckConfig {
    pub(crate) probe: HealthProbe,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    /// Consecutive successes that mark an unhealthy server healthy.
    pub(crate) rise: usize,
    /// Consecutive failures that mark a healthy server unhealthy.
    pub(crate) fall: usize,
}

/// Timeouts towards a group's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) read: Duration,
    pub(crate) write: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub(crate) idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// One server of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: usize,
}

/// A server given by name (`name:port`), resolved again while the gateway runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedServer {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) weight: usize,
}

/// How a group's named servers are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResolveConfig {
    /// The DNS server asked; `None`: the system's resolver configuration.
    pub(crate) resolver: Option<SocketAddr>,
    /// How often names are resolved again (with `resolver`: the record's TTL, at most this).
    pub(crate) interval: Duration,
}

/// Default of `gateway.groups.NAME.resolve_interval`.
pub(crate) const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

impl Default for ResolveConfig {
    fn default() -> Self {
        ResolveConfig {
            resolver: None,
            interval: DEFAULT_RESOLVE_INTERVAL,
        }
    }
}

/// One upstream group, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub(crate) name: String,
    /// Servers given as addresses.
    pub(crate) servers: Vec<ServerConfig>,
    /// Servers given by name, resolved in the background (see `names`).
    pub(crate) named: Vec<NamedServer>,
    /// How `named` is resolved.
    pub(crate) resolve: ResolveConfig,
    pub(crate) selection: Selection,
    /// `None` turns active health checks off: every server is always considered healthy.
    pub(crate) health_check: Option<HealthCheckConfig>,
    pub(crate) timeouts: Timeouts,
    /// Where this group's users go while none of its servers is healthy.
    pub(crate) fallback: Option<GroupId>,
    /// What the group's servers receive as `Host`.
    pub(crate) host_header: HostHeader,
    /// TLS towards the servers (and their health checks); `None`: plaintext.
    pub(crate) tls: Option<UpstreamTls>,
    /// What the servers speak (requests and health checks alike).
    pub(crate) protocol: Protocol,
    /// Most requests in flight at once on one HTTP/2 connection to a server; ignored by `H1`.
    pub(crate) max_streams: usize,
}

#[cfg(test)]
impl GroupConfig {
    /// A group for unit tests: `name` with servers on 127.0.0.1 at `ports` (weight 1), round
    /// robin, and every other key at its default (no health checks, no fallback, plain HTTP/1).
    pub(crate) fn for_test(name: &str, ports: &[u16]) -> GroupConfig {
        GroupConfig {
            name: name.into(),
            servers: ports
                .iter()
                .map(|&p| ServerConfig {
                    addr: SocketAddr::from(([127, 0, 0, 1], p)),
                    weight: 1,
                })
                .collect(),
            named: Vec::new(),
            resolve: ResolveConfig::default(),
            selection: Selection::RoundRobin,
            health_check: None,
            timeouts: Timeouts::default(),
            fallback: None,
            host_header: HostHeader::default(),
            tls: None,
            protocol: Protocol::H1,
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

/// TLS towards a group's servers.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    /// The server name sent (SNI) and checked against the server's certificate.
    pub(crate) sni: String,
    /// Whether the server's certificate is verified (chain and name).
    pub(crate) verify: bool,
    /// The CA certificates to verify against; `None`: the system's roots.
    pub(crate) ca: Option<Arc<[WrappedX509]>>,
    /// The client certificate and key offered (mutual TLS).
    pub(crate) client: Option<Arc<CertKey>>,
    /// `tls.http2` as written (the older spelling of `protocol: auto`, which is what the
    /// peer is built from); part of the pool key, as it always was.
    pub(crate) http2: bool,
    /// The bytes of the files behind `ca` and `client`, so that a reload that changes them
    /// counts as a changed group (and gets a new pool).
    pub(crate) source: Vec<u8>,
}

impl UpstreamTls {
    /// A key that keeps the pooled connections of different TLS settings apart (FNV-1a over
    /// the settings and the CA and client certificate files).
    pub(crate) fn pool_key(&self) -> u64 {
        let flags = [u8::from(self.verify), u8::from(self.http2)];
        fnv1a64(&[self.sni.as_bytes(), &flags, &self.source])
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.sni == other.sni
            && self.verify == other.verify
            && self.http2 == other.http2
            && self.ca.is_some() == other.ca.is_some()
            && self.client.is_some() == other.client.is_some()
            && self.source == other.source
    }
}

impl Eq for UpstreamTls {}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_certificate", &self.client.is_some())
            .field("http2", &self.http2)
            .finish()
    }
}

/// The `Host` a group's servers receive (nginx's `proxy_set_header Host $host` or
/// `$proxy_host`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum HostHeader {
    /// The client's `Host`, unchanged.
    #[default]
    Client,
    /// The server's own `ip:port`.
    Server,
    /// This name (checked once at load, so a request only copies a reference).
    Name(http::HeaderValue),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(sni: &str, source: &[u8]) -> UpstreamTls {
        UpstreamTls {
            sni: sni.into(),
            verify: true,
            ca: None,
            client: None,
            http2: false,
            source: source.to_vec(),
        }
    }

    /// Groups that trust different CAs (or send another name) never share pooled connections.
    #[test]
    fn pool_keys_differ_with_the_trust_settings() {
        let a = tls("api.internal", b"CA one");
        assert_eq!(a.pool_key(), tls("api.internal", b"CA one").pool_key());
        assert_ne!(a.pool_key(), tls("api.internal", b"CA two").pool_key());
        assert_ne!(a.pool_key(), tls("other.internal", b"CA one").pool_key());
        let mut unverified = tls("api.internal", b"CA one");
        unverified.verify = false;
        assert_ne!(a.pool_key(), unverified.pool_key());
    }

    /// The key is FNV-1a-64 over SNI, the two flags and the files' bytes: pinned, so sharing
    /// the routing layer's FNV (or any later change) cannot move it.
    #[test]
    fn pool_key_is_fnv1a_of_the_settings() {
        // FNV-1a-64 of b"api.internal\x01\x00CA one", as the pool computed it before.
        assert_eq!(
            tls("api.internal", b"CA one").pool_key(),
            0x8097_f80a_f44f_ea93
        );
    }
}
