//! The demo origins: tiny HTTP servers in the gateway's own process that answer every request
//! with a fixed body ("This is version 1"), so `cargo run --release` shows routing end to end.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::config::DemoOrigin;

/// Answers every request with its body and `200 OK`.
pub(crate) struct FixedBodyApp {
    body: Vec<u8>,
}

#[async_trait]
impl ServeHttp for FixedBodyApp {
    async fn response(&self, _session: &mut ServerSession) -> Response<Vec<u8>> {
        super::http_response(StatusCode::OK, "text/plain", self.body.clone())
    }
}

/// A listening service for one demo origin.
pub(crate) fn demo_origin_service(origin: &DemoOrigin) -> Service<HttpServer<FixedBodyApp>> {
    let app = FixedBodyApp {
        body: format!("{}\n", origin.body).into_bytes(),
    };
    let mut service = Service::new(
        format!("demo origin {}", origin.listen),
        HttpServer::new_app(app),
    );
    // The demo origins: one thread is plenty, whatever `threads` says.
    service.threads = Some(1);
    service.add_tcp(&origin.listen);
    service
}
