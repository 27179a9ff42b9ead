//! Draining, disabling and enabling a group's servers (`POST
//! /config/groups/{g}/servers/{addr}/drain|enable|disable`): one versioned, audited change of
//! the control state each, applied to the pools of every state that holds them; and the
//! per-server view (`mode`, health, weight, requests in flight) that `/status` and `GET
//! /config/groups/{g}/servers` show.

use serde::Serialize;
use std::net::SocketAddr;

use super::audit::AuditEntry;
use super::changes::Changed;
use super::controller::Controller;
use super::StateError;
use crate::upstreams::{GroupConfig, Pool, ServerMode};

/// One server of a group as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ServerView {
    /// The server as written in the group (`ip:port` or `name:port`): the `{addr}` of its
    /// endpoints.
    pub(crate) server: String,
    /// `enabled`, `draining` (requests still in flight), `drained` (idle) or `disabled`.
    pub(crate) mode: &'static str,
    /// The last health check's verdict (a named server: healthy when one of its addresses
    /// is; without a health check every server counts as healthy).
    pub(crate) healthy: bool,
    pub(crate) weight: usize,
    /// Requests sent to it that have not finished.
    pub(crate) in_flight: usize,
    /// A named server's current addresses (empty for an address server).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) addrs: Vec<String>,
}

/// What `POST …/drain|enable|disable` answers.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerChanged {
    /// Always true (as every change's answer).
    pub(crate) ok: bool,
    pub(crate) group: String,
    #[serde(flatten)]
    pub(crate) server: ServerView,
    pub(crate) generation: u64,
    pub(crate) version: u64,
}

/// Every configured server of `pool`'s group, in configuration order (address servers, then
/// named ones).
pub(crate) fn server_views(pool: &Pool) -> Vec<ServerView> {
    let config = &pool.config;
    let health = pool.health();
    let healthy = |addr: &SocketAddr| health.iter().any(|(a, h)| a == addr && *h);
    let names = pool.names();
    pool.server_uses()
        .into_iter()
        .enumerate()
        .map(|(i, used)| {
            let mode = used.mode_word();
            let (healthy, weight, addrs) = match config.servers.get(i) {
                Some(server) => (healthy(&server.addr), server.weight, Vec::new()),
                None => {
                    let n = i - config.servers.len();
                    let addrs = names.get(n).map(|s| s.addrs.clone()).unwrap_or_default();
                    let weight = config.named.get(n).map_or(1, |s| s.weight);
                    (
                        addrs.iter().any(healthy),
                        weight,
                        addrs.iter().map(ToString::to_string).collect(),
                    )
                }
            };
            ServerView {
                server: used.written,
                mode,
                healthy,
                weight,
                in_flight: used.in_flight,
                addrs,
            }
        })
        .collect()
}

/// The server `addr` names in `group`, as written there: an address is compared as an
/// address (`127.0.0.1:8001`), a name as written (`api.internal:8080`).
fn written_server(group: &GroupConfig, addr: &str) -> Option<String> {
    if let Ok(parsed) = addr.parse::<SocketAddr>() {
        if group.servers.iter().any(|s| s.addr == parsed) {
            return Some(parsed.to_string());
        }
    }
    group
        .named
        .iter()
        .map(|n| format!("{}:{}", n.host, n.port))
        .find(|written| written.eq_ignore_ascii_case(addr))
}

/// The word of a mode in the audit trail.
fn mode_name(mode: Option<ServerMode>) -> &'static str {
    match mode {
        None => "enabled",
        Some(ServerMode::Draining) => "draining",
        Some(ServerMode::Disabled) => "disabled",
    }
}

impl Controller {
    /// `POST /config/groups/{group}/servers/{addr}/drain|enable|disable`: `mode` (`None`:
    /// enabled) for one server of a group, on every node. `NotFound` names an unknown group or
    /// server. Answers the server as it is once the change is applied here.
    pub(crate) async fn set_server_mode(
        &self,
        actor: &str,
        group: &str,
        addr: &str,
        mode: Option<ServerMode>,
    ) -> Result<ServerChanged, StateError> {
        let action = match mode {
            None => "server_enable",
            Some(ServerMode::Draining) => "server_drain",
            Some(ServerMode::Disabled) => "server_disable",
        };
        let entry = AuditEntry::now(actor, None, None, action, String::new());
        let mut server = String::new();
        let changed: Changed = self
            .change(entry, |inner, overlay, entry| {
                let config = inner
                    .base
                    .groups
                    .iter()
                    .find(|g| g.name == group)
                    .ok_or_else(|| StateError::not_found(format!("no group named {group:?}")))?;
                server = written_server(config, addr).ok_or_else(|| {
                    StateError::not_found(format!("group {group:?} has no server {addr:?}"))
                })?;
                let modes = overlay.servers.entry(group.to_string()).or_default();
                let before = modes.get(&server).copied();
                match mode {
                    Some(mode) => modes.insert(server.clone(), mode),
                    None => modes.remove(&server),
                };
                if modes.is_empty() {
                    overlay.servers.remove(group);
                }
                entry.moved(
                    &format!("group {group} server {server}"),
                    mode_name(before).to_string(),
                    mode_name(mode).to_string(),
                );
                Ok(())
            })
            .await?;
        let view = self
            .group_servers(group)?
            .into_iter()
            .find(|v| v.server == server)
            .ok_or_else(|| {
                StateError::not_found(format!("group {group:?} has no server {server:?}"))
            })?;
        Ok(ServerChanged {
            ok: true,
            group: group.to_string(),
            server: view,
            generation: changed.generation,
            version: changed.version,
        })
    }

    /// `GET /config/groups/{group}/servers`: each server of the group with its mode, health,
    /// weight and requests in flight (`NotFound` for an unknown group).
    pub(crate) fn group_servers(&self, group: &str) -> Result<Vec<ServerView>, StateError> {
        let state = self.state().load_full();
        let pool = state
            .pools
            .iter()
            .find(|p| p.config.name == group)
            .ok_or_else(|| StateError::not_found(format!("no group named {group:?}")))?;
        Ok(server_views(pool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::overlay::{apply_server_modes, Overlay};
    use crate::upstreams::GroupConfig;
    use std::sync::Arc;

    fn group(ports: &[u16]) -> GroupConfig {
        GroupConfig::for_test("web", ports)
    }

    /// An address is found as an address, whatever its spelling; anything else is no server.
    #[test]
    fn servers_are_found_as_written() {
        let g = group(&[8001, 8002]);
        assert_eq!(
            written_server(&g, "127.0.0.1:8002").as_deref(),
            Some("127.0.0.1:8002")
        );
        assert_eq!(written_server(&g, "127.0.0.1:9"), None);
        assert_eq!(written_server(&g, "localhost:8001"), None);
    }

    /// The control state's modes reach the pool; a draining server shows `drained` while idle
    /// and `draining` while a request is in flight on it; unknown names are warned about.
    #[test]
    fn modes_reach_the_pool_and_show_in_the_view() {
        let pool = Arc::new(Pool::new(group(&[8001, 8002])));
        let mut overlay = Overlay::default();
        let web = overlay.servers.entry("web".into()).or_default();
        web.insert("127.0.0.1:8001".into(), ServerMode::Draining);
        web.insert("127.0.0.1:9".into(), ServerMode::Disabled);
        overlay
            .servers
            .entry("gone".into())
            .or_default()
            .insert("127.0.0.1:1".into(), ServerMode::Disabled);
        let warnings = apply_server_modes(std::slice::from_ref(&pool), &overlay);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let modes = |pool: &Pool| -> Vec<&'static str> {
            server_views(pool).iter().map(|v| v.mode).collect()
        };
        assert_eq!(modes(&pool), ["drained", "enabled"]);
        let draining = SocketAddr::from(([127, 0, 0, 1], 8001));
        let slot = pool.begin_request(draining).expect("a configured server");
        assert_eq!(modes(&pool), ["draining", "enabled"]);
        assert_eq!(server_views(&pool)[0].in_flight, 1);
        pool.end_request(slot);
        assert_eq!(modes(&pool), ["drained", "enabled"]);
        apply_server_modes(std::slice::from_ref(&pool), &Overlay::default());
        assert_eq!(modes(&pool), ["enabled", "enabled"]);
    }

    /// A server given by name is held back on every address it resolves to, and is found by
    /// its name as written.
    #[test]
    fn a_named_server_is_held_back_on_its_addresses() {
        let mut config = group(&[8001]);
        config.named.push(crate::upstreams::NamedServer {
            host: "localhost".into(),
            port: 8005,
            weight: 2,
        });
        assert_eq!(
            written_server(&config, "localhost:8005").as_deref(),
            Some("localhost:8005")
        );
        let pool = Pool::new(config);
        // The system's resolver is asked once when the pool is built.
        let resolved: Vec<SocketAddr> = pool.names()[0].addrs.clone();
        assert!(!resolved.is_empty(), "localhost resolves");
        pool.set_modes(|s| (s == "localhost:8005").then_some(ServerMode::Disabled));
        for addr in &resolved {
            assert!(!pool.takes_requests(*addr), "{addr}");
        }
        let only_static = SocketAddr::from(([127, 0, 0, 1], 8001));
        for _ in 0..6 {
            assert_eq!(pool.select(b"u", &[], None), Some(only_static));
        }
        let views = server_views(&pool);
        assert_eq!(views[1].server, "localhost:8005");
        assert_eq!((views[1].mode, views[1].weight), ("disabled", 2));
        assert!(!views[1].addrs.is_empty());
    }
}
