//! What a health check does to one server: connect (with the TLS handshake when the group
//! speaks TLS), `GET` a path, or ask the gRPC health service, each over the same peer (and so
//! the same protocol: HTTP/1.1, h2 or h2c) that requests use.

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::connectors::http::Connector as HttpConnector;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;

use super::peer::server_peer;
use super::{GroupConfig, HealthCheckConfig, HealthProbe};

/// The address in a check's peer template; each check replaces it with the server's.
const PLACEHOLDER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 1);

/// The health check `config` of `group`, connecting as the group's requests do (with
/// `tls_pool_key` as the pool has it): an HTTP check speaks the group's protocol, so an h2c
/// group is checked over h2c.
pub(super) fn health_check(
    config: &HealthCheckConfig,
    group: &GroupConfig,
    tls_pool_key: u64,
) -> Box<dyn HealthCheck + Send + Sync> {
    let tls = group.tls.as_ref();
    // One stream per check connection: checks never share (or hold) a request's connection.
    let mut peer = server_peer(PLACEHOLDER, tls, tls_pool_key, group.protocol, 1);
    peer.options.connection_timeout = Some(config.timeout);
    match &config.probe {
        HealthProbe::Grpc { service } => {
            peer.options.read_timeout = Some(config.timeout);
            peer.options.write_timeout = Some(config.timeout);
            Box::new(GrpcCheck {
                peer,
                connector: HttpConnector::new(None),
                request: grpc_health_request(service),
                rise: config.rise,
                fall: config.fall,
            })
        }
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

/// `grpc.health.v1.Health/Check`: healthy when the server answers `SERVING` with
/// `grpc-status: 0`. Each check makes a new connection (as the TCP and HTTP checks do).
struct GrpcCheck {
    peer: HttpPeer,
    connector: HttpConnector,
    /// The request message, framed (the 5-byte gRPC prefix and the protobuf
    /// `HealthCheckRequest { service }`).
    request: Bytes,
    rise: usize,
    fall: usize,
}

/// The path of the gRPC health-checking protocol's `Check` method.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

fn grpc_failure(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::CustomCode("grpc health check", 0), why)
}

#[async_trait]
impl HealthCheck for GrpcCheck {
    async fn check(&self, target: &Backend) -> pingora_core::Result<()> {
        let mut peer = self.peer.clone();
        peer._address = target.addr.clone();
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        let mut req = RequestHeader::build("POST", GRPC_HEALTH_CHECK.as_bytes(), None)?;
        req.insert_header("content-type", "application/grpc")?;
        req.insert_header("te", "trailers")?;
        // HTTP/2 needs an authority: the TLS server name, else the server's address.
        let authority = match self.peer.sni.as_str() {
            "" => target.addr.to_string(),
            sni => sni.to_string(),
        };
        req.insert_header("host", authority)?;
        if let HttpSession::H1(_) = session {
            // gRPC needs HTTP/2 (trailers); a group whose server answered ALPN with
            // http/1.1 cannot be asked.
            return Err(grpc_failure("the server does not speak HTTP/2"));
        }
        session.write_request_header(Box::new(req)).await?;
        session
            .write_request_body(self.request.clone(), true)
            .await?;
        session.read_response_header().await?;
        let status = session.response_header().map(|r| r.status.as_u16());
        if status != Some(200) {
            return Err(grpc_failure("the answer's HTTP status is not 200"));
        }
        // A trailers-only answer carries grpc-status in its head.
        let head_status = session
            .response_header()
            .and_then(|r| r.headers.get("grpc-status").cloned());
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > 4096 {
                return Err(grpc_failure("the answer is too long"));
            }
        }
        let trailer_status = match &mut session {
            HttpSession::H2(h2) => h2
                .read_trailers()
                .await?
                .and_then(|t| t.get("grpc-status").cloned()),
            _ => None,
        };
        match head_status.or(trailer_status) {
            Some(v) if v.as_bytes() == b"0" => {}
            _ => return Err(grpc_failure("grpc-status is not 0")),
        }
        if serving_status(&body) == Some(SERVING) {
            Ok(())
        } else {
            Err(grpc_failure("the server is not SERVING"))
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.rise
        } else {
            self.fall
        }
    }
}

/// The framed `HealthCheckRequest { service = 1 }`: gRPC's prefix (not compressed, the
/// message length, big-endian) and the protobuf message (field 1, length-delimited, when the
/// name is not empty).
fn grpc_health_request(service: &str) -> Bytes {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The `status` (field 1, a varint) of a framed `HealthCheckResponse`; `None` when the
/// answer is not one uncompressed message. A message without the field is `UNKNOWN` (0).
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let mut message = rest.get(4..4 + len)?;
    let mut status = 0;
    while !message.is_empty() {
        let (key, used) = varint(message)?;
        message = &message[used..];
        match key & 7 {
            0 => {
                let (value, used) = varint(message)?;
                message = &message[used..];
                if key >> 3 == 1 {
                    status = value;
                }
            }
            2 => {
                let (len, used) = varint(message)?;
                message = message.get(used + len as usize..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request is the 5-byte prefix and `HealthCheckRequest { service }` (nothing for the
    /// whole server).
    #[test]
    fn health_requests_are_framed() {
        assert_eq!(&grpc_health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_health_request("pkg.Svc")[..],
            &[0, 0, 0, 0, 9, 0x0a, 7, b'p', b'k', b'g', b'.', b'S', b'v', b'c']
        );
    }

    /// SERVING (1), NOT_SERVING (2), an empty message (UNKNOWN) and what is not a message.
    #[test]
    fn serving_status_is_read_from_the_answer() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(serving_status(&[1, 0, 0, 0, 2, 0x08, 1]), None);
        assert_eq!(serving_status(&[0, 0, 0, 0, 5, 0x08]), None);
        assert_eq!(serving_status(&[]), None);
    }
}
