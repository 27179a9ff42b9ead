//! Upstream groups as pools of servers: one `pingora-load-balancing` balancer per group
//! (weighted round robin or consistent hashing by user id), active health checks (TCP or HTTP),
//! per-group timeouts, and the one fallback walk that picks a server for a request.
//!
//! Above `routing` (group ids), below `config` (which builds [`GroupConfig`]s): knows nothing of
//! configuration files, the live state or the admin API.

mod health;
mod pool;
mod walk;

pub use health::HealthChecker;
pub use pool::Pool;
pub use walk::{pick, Pick};

use std::net::SocketAddr;
use std::time::Duration;

use crate::routing::GroupId;

/// How a group picks a server for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Weighted round robin.
    RoundRobin,
    /// Consistent (ketama) hashing of the user id, so a user keeps hitting the same server.
    Consistent,
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// A TCP connect.
    Tcp,
    /// `GET path` with `Host: host`, healthy when the status is `expect_status`.
    Http {
        path: String,
        host: String,
        expect_status: u16,
    },
}

/// An active health check of every server in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub probe: HealthProbe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that mark an unhealthy server healthy.
    pub rise: usize,
    /// Consecutive failures that mark a healthy server unhealthy.
    pub fall: usize,
}

/// Timeouts towards a group's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle: Duration,
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
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub weight: usize,
}

/// One upstream group, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub name: String,
    pub servers: Vec<ServerConfig>,
    pub selection: Selection,
    /// `None` turns active health checks off: every server is always considered healthy.
    pub health_check: Option<HealthCheckConfig>,
    pub timeouts: Timeouts,
    /// Where this group's users go while none of its servers is healthy.
    pub fallback: Option<GroupId>,
    /// What the group's servers receive as `Host`.
    pub host_header: HostHeader,
}

/// The `Host` a group's servers receive (nginx's `proxy_set_header Host $host` or
/// `$proxy_host`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostHeader {
    /// The client's `Host`, unchanged.
    #[default]
    Client,
    /// The server's own `ip:port`.
    Server,
    /// This name.
    Name(String),
}
