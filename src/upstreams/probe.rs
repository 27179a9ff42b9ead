//! What a health check does to one server: connect (with the TLS handshake when the group
//! speaks TLS) or `GET` a path, each over the same peer that requests use.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::connectors::TransportConnector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;

use super::peer::server_peer;
use super::{HealthCheckConfig, HealthProbe, UpstreamTls};

/// The address in a check's peer template; each check replaces it with the server's.
const PLACEHOLDER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 1);

/// The health check of a group with `config`, connecting as the group's requests do (`tls`
/// and `tls_pool_key` as the pool has them).
pub(super) fn health_check(
    config: &HealthCheckConfig,
    tls: Option<&UpstreamTls>,
    tls_pool_key: u64,
) -> Box<dyn HealthCheck + Send + Sync> {
    let mut peer = server_peer(PLACEHOLDER, tls, tls_pool_key);
    // A probe speaks HTTP/1.1 (or nothing) whatever the group's requests do.
    peer.options.set_http_version(1, 1);
    peer.options.connection_timeout = Some(config.timeout);
    match &config.probe {
        HealthProbe::Tcp => Box::new(ConnectCheck {
            peer,
            connector: TransportConnector::new(None),
            rise: config.rise,
            fall: config.fall,
        }),
        HealthProbe::Http {
            path,
            host,
            expect_status,
        } => {
            let mut check = HttpHealthCheck::new(host, tls.is_some());
            peer.options.read_timeout = Some(config.timeout);
            check.peer_template = peer;
            check.consecutive_success = config.rise;
            check.consecutive_failure = config.fall;
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                if req.insert_header("Host", host.as_str()).is_ok() {
                    check.req = req;
                }
            }
            let expect = *expect_status;
            check.validator = Some(Box::new(move |response| {
                if response.status.as_u16() == expect {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("health check status", response.status.as_u16()),
                        format!("expected status {expect}"),
                    )
                }
            }));
            Box::new(check)
        }
    }
}

/// A check that a connection (and, over TLS, its handshake, certificate verified and client
/// certificate offered) can be made. Pingora's `TcpHealthCheck` connects with a `BasicPeer`,
/// which cannot offer a client certificate: an origin that requires one (and says so during
/// a TLS 1.2 handshake) would refuse the check and the server would be marked down.
struct ConnectCheck {
    /// The server's peer as requests have it, at a placeholder address.
    peer: HttpPeer,
    connector: TransportConnector,
    /// Consecutive successes that mark an unhealthy server healthy.
    rise: usize,
    /// Consecutive failures that mark a healthy server unhealthy.
    fall: usize,
}

#[async_trait]
impl HealthCheck for ConnectCheck {
    async fn check(&self, target: &Backend) -> pingora_core::Result<()> {
        let mut peer = self.peer.clone();
        peer._address = target.addr.clone();
        // The stream is dropped, never pooled: each check makes a new connection.
        self.connector.get_stream(&peer).await.map(|_| ())
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.rise
        } else {
            self.fall
        }
    }
}
