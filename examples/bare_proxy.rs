//! A bare Pingora `ProxyHttp` with no routing, headers, limits or metrics: every request goes
//! to one upstream. `scripts/loadtest.sh` runs it as the `pingora-bare` baseline, so the
//! gateway's own cost and Pingora's can be told apart in one run.
//!
//! Usage: bare_proxy LISTEN UPSTREAM [--timeouts]   (1 thread, no work stealing, mimalloc, like
//! the gateway). `--timeouts` sets the gateway's default upstream timeouts (connect 2 s, read,
//! write and idle 60 s) on the peer, so what Pingora charges for them shows apart from the hooks.

use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static ALLOCATOR: canary_gateway::alloc::Allocator = canary_gateway::alloc::Allocator;

struct Bare {
    upstream: String,
    timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        if self.timeouts {
            let minute = Duration::from_secs(60);
            peer.options.connection_timeout = Some(Duration::from_secs(2));
            peer.options.read_timeout = Some(minute);
            peer.options.write_timeout = Some(minute);
            peer.options.idle_timeout = Some(minute);
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM [--timeouts]");
        std::process::exit(2);
    };
    let timeouts = args.next().as_deref() == Some("--timeouts");
    let conf = ServerConf::from_yaml("version: 1\nthreads: 1\nwork_stealing: false\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n")
        .unwrap_or_else(|e| panic!("fixed config is valid: {e}"));
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy =
        pingora_proxy::http_proxy_service(&server.configuration, Bare { upstream, timeouts });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
