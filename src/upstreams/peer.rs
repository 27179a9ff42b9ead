//! The one description of a connection to a group's server (address, TLS settings, client
//! certificate, ALPN), from which requests and every health check connect.

use std::net::SocketAddr;

use pingora_core::upstreams::peer::HttpPeer;

use super::{Protocol, UpstreamTls};

/// How the gateway connects to one of a group's servers: plaintext, or TLS as the group's
/// settings say (verification against the system roots or the group's CA, the client
/// certificate); HTTP/1.1, HTTP/2 (by ALPN over TLS, by prior knowledge over plaintext) or
/// whatever ALPN agrees on, as `protocol` says, with at most `max_streams` requests on one
/// HTTP/2 connection. The one description of that connection: requests and every health
/// check start from it, so a check connects as requests do. `pool_key` is `tls.pool_key()`.
pub(super) fn server_peer(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    pool_key: u64,
    protocol: Protocol,
    max_streams: usize,
) -> HttpPeer {
    let mut peer = match tls {
        None => HttpPeer::new(addr, false, String::new()),
        Some(tls) => {
            let mut peer = HttpPeer::new(addr, true, tls.sni.clone());
            // Pingora pools connections by address, SNI, verification flags and client
            // certificate, not by CA: without this key a group trusting another CA could reuse
            // a connection that a different group verified (or did not).
            peer.group_key = pool_key;
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
            peer.options.ca = tls.ca.clone();
            peer.client_cert_key = tls.client.clone();
            peer
        }
    };
    // Pingora speaks HTTP/2 over plaintext when the lowest version allowed is 2 (there is no
    // ALPN to ask): that is h2c with prior knowledge. Config validation keeps `H2` and `Auto`
    // to TLS groups and `H2c` to plaintext ones.
    match protocol {
        Protocol::H1 => peer.options.set_http_version(1, 1),
        Protocol::H2 | Protocol::H2c => peer.options.set_http_version(2, 2),
        Protocol::Auto => peer.options.set_http_version(2, 1),
    }
    // Pingora's default is one stream per HTTP/2 connection; the reuse hash covers it, so
    // groups with different limits never share a connection.
    if protocol.multiplexed() {
        peer.options.max_h2_streams = max_streams.max(1);
        // Flow control: each stream gets h2's default window, the connection that window
        // times the streams it may carry. A stream whose client stopped reading holds at most
        // its own window of unread data, so it can never close the window the connection's
        // other streams share (with equal windows, one stalled reader held every other call
        // on its connection until their deadlines).
        let streams = u32::try_from(max_streams.max(1)).unwrap_or(u32::MAX);
        peer.options.h2_stream_window_size = Some(H2_STREAM_WINDOW);
        peer.options.h2_connection_window_size =
            Some(H2_STREAM_WINDOW.saturating_mul(streams).min(H2_MAX_WINDOW));
    }
    peer
}

/// The receive window of one upstream HTTP/2 stream: the protocol's default (RFC 9113 §6.9.2).
const H2_STREAM_WINDOW: u32 = 65_535;
/// The largest window HTTP/2 allows.
const H2_MAX_WINDOW: u32 = (1 << 31) - 1;
