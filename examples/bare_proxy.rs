//! A bare Pingora `ProxyHttp` with no routing, headers, limits or metrics: every request goes
//! to one upstream. `scripts/loadtest.sh` runs it as the `pingora-bare` baseline, so the
//! gateway's own cost and Pingora's can be told apart in one run.
//!
//! Usage: bare_proxy LISTEN UPSTREAM   (1 thread, no work stealing, mimalloc, like the gateway)

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let conf = ServerConf::from_yaml("version: 1\nthreads: 1\nwork_stealing: false\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n")
        .unwrap_or_else(|e| panic!("fixed config is valid: {e}"));
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
