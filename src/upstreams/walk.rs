//! The fallback walk: the one place that turns a decided group into a server. The proxy calls
//! it for every connection attempt and the explain endpoint calls it to say where a user would
//! be served right now, so the two cannot disagree.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Pool;
use crate::routing::GroupId;

/// Where a request goes: the group that serves it (the decided one or a fallback) and a server.
pub(crate) struct Pick<'a> {
    pub(crate) group: GroupId,
    pub(crate) pool: &'a Arc<Pool>,
    pub(crate) addr: SocketAddr,
}

/// Picks a server for a request decided for `group`, following the fallback chain (acyclic,
/// checked at load) until a group has a healthy server that is not in `failed` (servers that
/// refused this request a connection). `avoid` (a server that failed after the request was
/// sent) is skipped on a first walk and used again, on a fresh connection, only when nothing
/// else can serve. `key` is the user id, used by consistent groups. `None`: nothing can serve.
pub(crate) fn pick<'a>(
    pools: &'a [Arc<Pool>],
    group: GroupId,
    key: &[u8],
    failed: &[SocketAddr],
    avoid: Option<SocketAddr>,
) -> Option<Pick<'a>> {
    let walk = |avoid: Option<SocketAddr>| {
        let mut group = group;
        // Each group at most once: the chain has no cycle, so this bounds it.
        for _ in 0..pools.len() {
            let pool = pools.get(group.0)?;
            if let Some(addr) = pool.select(key, failed, avoid) {
                return Some(Pick { group, pool, addr });
            }
            group = pool.config.fallback?;
        }
        None
    };
    walk(avoid).or_else(|| avoid.and_then(|_| walk(None)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstreams::{GroupConfig, Selection};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pool(name: &str, ports: &[u16], fallback: Option<usize>, selection: Selection) -> Arc<Pool> {
        // No health checks (the fixture's default): every server counts as healthy.
        Arc::new(Pool::new(GroupConfig {
            selection,
            fallback: fallback.map(GroupId),
            ..GroupConfig::for_test(name, ports)
        }))
    }

    /// stable (one server) <- canary (two servers) falls back to stable.
    fn pools() -> Vec<Arc<Pool>> {
        vec![
            pool("stable", &[1001], None, Selection::RoundRobin),
            pool("canary", &[2001, 2002], Some(0), Selection::RoundRobin),
        ]
    }

    /// The decided group serves when one of its servers can.
    #[test]
    fn decided_group_serves() {
        let pools = pools();
        let p = pick(&pools, GroupId(1), b"u", &[], None).expect("a server");
        assert_eq!(p.group, GroupId(1));
        assert!([addr(2001), addr(2002)].contains(&p.addr));
    }

    /// Servers that refused a connection are skipped; when all have, the fallback group serves.
    #[test]
    fn failed_servers_lead_to_the_fallback() {
        let pools = pools();
        let p = pick(&pools, GroupId(1), b"u", &[addr(2001)], None).expect("a server");
        assert_eq!((p.group, p.addr), (GroupId(1), addr(2002)));
        let p = pick(&pools, GroupId(1), b"u", &[addr(2001), addr(2002)], None).expect("fallback");
        assert_eq!((p.group, p.addr), (GroupId(0), addr(1001)));
        assert!(
            pick(
                &pools,
                GroupId(1),
                b"u",
                &[addr(2001), addr(2002), addr(1001)],
                None
            )
            .is_none(),
            "nothing left"
        );
        assert!(
            pick(&pools, GroupId(0), b"u", &[addr(1001)], None).is_none(),
            "stable has no fallback"
        );
    }

    /// A server to avoid is skipped while another can serve, in its group or a fallback, and
    /// used again when it is the only one left.
    #[test]
    fn avoided_server_is_the_last_resort() {
        let pools = pools();
        let p = pick(&pools, GroupId(1), b"u", &[addr(2002)], Some(addr(2001))).expect("fallback");
        assert_eq!((p.group, p.addr), (GroupId(0), addr(1001)));
        let p = pick(&pools, GroupId(0), b"u", &[], Some(addr(1001))).expect("last resort");
        assert_eq!(p.addr, addr(1001));
    }

    /// Consistent groups send the same user to the same server; round robin spreads.
    #[test]
    fn selection_by_user_key() {
        let servers = [3001, 3002, 3003, 3004];
        let consistent = vec![pool("c", &servers, None, Selection::Consistent)];
        for user in ["alice", "bob", "carol"] {
            let first = pick(&consistent, GroupId(0), user.as_bytes(), &[], None)
                .expect("server")
                .addr;
            for _ in 0..20 {
                let again = pick(&consistent, GroupId(0), user.as_bytes(), &[], None);
                assert_eq!(again.expect("server").addr, first, "{user} stays put");
            }
        }
        let round_robin = vec![pool("r", &servers, None, Selection::RoundRobin)];
        let seen: std::collections::BTreeSet<SocketAddr> = (0..8)
            .filter_map(|_| pick(&round_robin, GroupId(0), b"alice", &[], None).map(|p| p.addr))
            .collect();
        assert_eq!(seen.len(), servers.len(), "round robin visits every server");
    }

    /// A draining or disabled server gets no new request, exactly as an unhealthy one; when
    /// every server of the group is held back, the group counts as down and its fallback
    /// serves. Enabling it again brings it back.
    #[test]
    fn draining_and_disabled_servers_are_skipped() {
        use crate::upstreams::ServerMode;
        let pools = pools();
        let canary = &pools[1];
        canary.set_modes(|s| (s == "127.0.0.1:2001").then_some(ServerMode::Draining));
        assert!(!canary.takes_requests(addr(2001)));
        for _ in 0..8 {
            let p = pick(&pools, GroupId(1), b"u", &[], None).expect("a server");
            assert_eq!((p.group, p.addr), (GroupId(1), addr(2002)));
        }
        canary.set_modes(|s| match s {
            "127.0.0.1:2001" => Some(ServerMode::Draining),
            _ => Some(ServerMode::Disabled),
        });
        assert!(!canary.any_healthy(), "a group of held servers is down");
        let p = pick(&pools, GroupId(1), b"u", &[], None).expect("the fallback");
        assert_eq!((p.group, p.addr), (GroupId(0), addr(1001)));
        // The one-server fast path holds servers back too.
        pools[0].set_modes(|_| Some(ServerMode::Disabled));
        assert!(pick(&pools, GroupId(1), b"u", &[], None).is_none());
        pools[0].set_modes(|_| None);
        canary.set_modes(|_| None);
        let seen: std::collections::BTreeSet<SocketAddr> = (0..8)
            .filter_map(|_| pick(&pools, GroupId(1), b"u", &[], None).map(|p| p.addr))
            .collect();
        assert_eq!(seen, [addr(2001), addr(2002)].into(), "enabled again");
    }

    /// A consistent group moves only the held server's users: the others keep their server.
    #[test]
    fn consistent_groups_skip_a_drained_server() {
        use crate::upstreams::ServerMode;
        let servers = [3001, 3002, 3003];
        let pools = vec![pool("c", &servers, None, Selection::Consistent)];
        let before: Vec<SocketAddr> = (0..50)
            .map(|u| {
                let user = format!("user-{u}");
                pick(&pools, GroupId(0), user.as_bytes(), &[], None)
                    .expect("server")
                    .addr
            })
            .collect();
        pools[0].set_modes(|s| (s == "127.0.0.1:3001").then_some(ServerMode::Draining));
        for (u, was) in before.iter().enumerate() {
            let user = format!("user-{u}");
            let now = pick(&pools, GroupId(0), user.as_bytes(), &[], None)
                .expect("server")
                .addr;
            assert_ne!(now, addr(3001), "{user}");
            if *was != addr(3001) {
                assert_eq!(now, *was, "{user} keeps its server");
            }
        }
    }
}
