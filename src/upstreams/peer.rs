//! The one description of a connection to a group's server (address, TLS settings, client
//! certificate, ALPN), from which requests and every health check connect.

use std::net::SocketAddr;

use pingora_core::upstreams::peer::HttpPeer;

use super::UpstreamTls;

/// How the gateway connects to one of a group's servers: plaintext, or TLS as the group's
/// settings say (verification against the system roots or the group's CA, the client
/// certificate, ALPN with h2 only when the group asks for it). The one description of that
/// connection: requests and every health check start from it, so a check connects as
/// requests do. `pool_key` is `tls.pool_key()`.
pub(super) fn server_peer(addr: SocketAddr, tls: Option<&UpstreamTls>, pool_key: u64) -> HttpPeer {
    let Some(tls) = tls else {
        return HttpPeer::new(addr, false, String::new());
    };
    let mut peer = HttpPeer::new(addr, true, tls.sni.clone());
    // Pingora pools connections by address, SNI, verification flags and client certificate,
    // not by CA: without this key a group trusting another CA could reuse a connection that
    // a different group verified (or did not).
    peer.group_key = pool_key;
    peer.options.verify_cert = tls.verify;
    peer.options.verify_hostname = tls.verify;
    peer.options.ca = tls.ca.clone();
    peer.client_cert_key = tls.client.clone();
    if tls.http2 {
        peer.options.set_http_version(2, 1);
    } else {
        peer.options.set_http_version(1, 1);
    }
    peer
}
