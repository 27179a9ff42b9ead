//! canary-gateway: an edge reverse proxy on Pingora that routes each user, by a cookie carrying
//! the user id, to an upstream group (stable, canary, ...) through ordered rules.
//!
//! `main` parses the command line and calls [`add_services`]; the end-to-end tests run the same
//! binary, so what they test is what operators run.
//!
//! The layers, lowest first. A layer imports only the layers listed before it; none imports a
//! later one (`python3 ../shared/tools/module-cycles src` and `--top src` find no circle):
//!
//! 1. `text` — writing numbers, addresses and JSON strings without `format!` (a leaf).
//! 2. `routing` — the pure decision: cookie, signature, rules, sticky hash, user sets.
//! 3. `upstreams` — pools, selection, health checks and the one fallback walk.
//! 4. `config` — the file into validated, typed values.
//! 5. `state` — the live state the data path reads, the controller, overlay, store, metrics.
//! 6. `proxy` — the Pingora hooks, head guard, forwarding headers, request ids, error statuses.
//! 7. `ops` — admin API, metrics endpoint, access log, webhook notices, signals and drain, demo
//!    origins.
//!
//! This file only wires them together.
//!
//! # The library's API
//!
//! Every layer is crate-private (`pub(crate)`) but for the few items the binary (`main.rs`),
//! the benches, the fuzz targets and the end-to-end tests use. Those are the whole public API;
//! each type's fields stay private unless listed, so a new field breaks no caller:
//!
//! - [`alloc::Allocator`]: the process's allocator (mimalloc through its fastest entry
//!   points), for the binary and `examples/bare_proxy.rs`.
//! - [`add_services`] and [`ConfigSource`]: start the gateway in a Pingora server, and say
//!   where its configuration came from (reload reads it again).
//! - [`raise_open_files_limit`] and [`OpenFiles`]: the start-up descriptor limit and what
//!   it became.
//! - [`check_api_objects`]: what `-t` checks beside the file — the routes and groups made
//!   through the admin API (kept in the state file) merged over it ([`config::objects`]:
//!   [`config::ConfigObjects`], [`config::objects::merge`],
//!   [`config::objects::validate_merged`]).
//! - [`config`]: [`config::load_file`], [`config::load_demo`] and [`config::load_str`] read and
//!   validate a file into a [`config::LoadedConfig`] (Pingora's settings, the
//!   [`config::GatewaySpec`] as written — [`config::GatewaySpec::from_yaml`] — and the
//!   validated [`config::GatewayConfig`], whose `listen`, `groups` and `routes` are readable);
//!   [`config::spec`] is the whole writable model of the file (every type and field public,
//!   `Serialize` + `Deserialize`, `to_yaml` writes what `from_yaml` reads);
//!   [`config::ConfigError`] names the key at fault; [`config::certificate_warnings`] and
//!   [`config::unix_now`] for the start-up expiry warnings, [`config::describe_listeners`] for
//!   the start-up log line, [`config::DEMO_CONFIG_NAME`] for messages.
//! - [`routing`]: the pure decision, built by constructors — [`routing::Router`]
//!   (`new`, `with_rules`, `with_signing_keys`; `user_from_cookies`, `decide`, group and rule
//!   names), [`routing::Rule`] (`header`, `users`, `percent`, or `new` from a
//!   [`routing::RuleKind`]), [`routing::RequestFacts`] (what a request shows the rules),
//!   [`routing::UserSet`], [`routing::Percent`] with [`routing::percent_bucket`],
//!   [`routing::is_valid_user_id`]; [`routing::routes`] (route table and the host and path
//!   normalisation) and [`routing::signed::signed_cookie_value`] (a signed user cookie, as
//!   tests send it).

pub mod alloc;
pub mod config;
mod ops;
mod proxy;
pub mod routing;
mod state;
mod text;
mod upstreams;

pub use ops::descriptors::{raise_open_files_limit, OpenFiles};
pub use ops::import::run as import_command;
pub use state::ConfigSource;

use std::sync::Arc;

use pingora_core::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;

use crate::config::ListenerKind;
use crate::config::{GatewayConfig, GatewaySpec};
use crate::ops::{access_log, admin, demo, lifecycle, metrics, notify};
use crate::proxy::connections::{Budgets, Connections};
use crate::proxy::redirect::Redirector;
use crate::proxy::tls::TlsApp;
use crate::proxy::workers::{Endpoint, ListenerApp, Worker};
use crate::proxy::{guard, CanaryProxy, InFlight, RequestLog};
use crate::state::history::HistoryService;
use crate::state::ratelimit::SharedLimitsService;
use crate::state::rollout::RolloutService;
use crate::state::store::StoreService;
use crate::state::Controller;
use pingora_core::apps::http_app::HttpServer;

/// Adds every service the configuration (`gateway`, validated from `spec`) asks for to
/// `server`: the proxy, the health checks, reload on SIGHUP, the prompt graceful exit, the
/// admin API and the demo origins. The controller that owns the live
/// configuration lives on in the services.
pub fn add_services(
    server: &mut Server,
    source: ConfigSource,
    spec: GatewaySpec,
    gateway: GatewayConfig,
) -> Result<(), String> {
    let listen = gateway.listen.clone();
    let admin = gateway.admin.clone();
    let demo_origins = gateway.demo_origins.clone();
    let notify_hooks = gateway.notify.clone();
    let metrics_listen = gateway.metrics_listen;
    let acme = gateway.acme.clone().map(|config| {
        // One certificate per distinct name set (validation allows shared sets only whole).
        let mut names: Vec<Vec<String>> = Vec::new();
        for listener in &gateway.listen {
            let mut set = listener.acme_names().to_vec();
            set.sort();
            if !set.is_empty()
                && !names.iter().any(|known| {
                    let mut known = known.clone();
                    known.sort();
                    known == set
                })
            {
                names.push(listener.acme_names().to_vec());
            }
        }
        (config, names)
    });
    let head_limits = gateway.limits.head;
    // The open-files limit was raised at start; 1024 is Linux's usual soft limit otherwise.
    let open_files = ops::descriptors::open_files().map_or(1024, |files| files.limit);
    let budgets = Budgets::new(
        &gateway,
        server.configuration.threads.max(1),
        server.configuration.upstream_keepalive_pool_size,
        open_files,
    );
    let access_log = match &gateway.access_log {
        Some(target) => Some(
            access_log::AccessLog::start(target.clone())
                .map_err(|e| format!("cannot open the access log {target:?}: {e}"))?,
        ),
        None => None,
    };
    let controller = Arc::new(Controller::new(source, spec, gateway).map_err(|e| e.to_string())?);
    if !notify_hooks.is_empty() {
        let notifier = notify::Notifier::new(notify_hooks);
        controller.set_notice_sink(notifier.sink());
        server.add_service(background_service("webhook notices", notifier));
    }
    let state = controller.state();
    let in_flight = InFlight::default();

    // `threads: N` runs N single-thread proxy workers on the same sockets (proxy/workers.rs).
    let log = access_log
        .clone()
        .map(|log| Arc::new(log) as Arc<dyn RequestLog>);
    for index in 0..server.configuration.threads.max(1) {
        let mut http_proxy = pingora_proxy::http_proxy(
            &server.configuration,
            CanaryProxy::new(state.clone(), in_flight.clone(), log.clone()),
        );
        http_proxy.h2_options = Some(guard::h2_options(&head_limits));
        let guarded = Arc::new(
            guard::GuardedApp::new(http_proxy, head_limits, in_flight.clone())
                .waiting_between_requests(state.clone()),
        );
        let endpoints = listen
            .iter()
            .zip(&budgets.listeners)
            .map(|(listener, connections)| {
                endpoint(listener, &guarded, &state, &head_limits, connections)
            })
            .collect();
        server.add_service(Worker::new(index, endpoints, client_listener));
    }
    server.add_service(background_service(
        "health checks",
        upstreams::HealthChecker::new(Arc::new(move || state.load().pools.clone())),
    ));
    server.add_service(background_service(
        "reload on SIGHUP",
        lifecycle::OnSignal::reload_on_hangup(controller.clone()),
    ));
    server.add_service(background_service(
        "close connections on upgrade",
        lifecycle::CloseConnectionsOnUpgrade::new(in_flight.clone()),
    ));
    let pid_file = Some(server.configuration.pid_file.clone().into());
    let mut exit_when_drained = lifecycle::ExitWhenDrained::new(in_flight, pid_file);
    if let Some(log) = access_log {
        let flushed = log.clone();
        exit_when_drained.before_exit(move || flushed.flush(std::time::Duration::from_secs(2)));
        server.add_service(background_service(
            "reopen access log on SIGUSR1",
            lifecycle::OnSignal::reopen_log_on_usr1(log),
        ));
    }
    server.add_service(background_service("exit when drained", exit_when_drained));
    if let (Some(listen), Some(connections)) = (metrics_listen, &budgets.metrics) {
        server.add_service(metrics::metrics_service(
            controller.clone(),
            &listen.to_string(),
            head_limits,
            connections.clone(),
        ));
    }
    if let Some(store) = controller.store() {
        server.add_service(background_service(
            "shared rate limits",
            SharedLimitsService::new(store.rate_limits.clone()),
        ));
        let (sets, control) = (controller.clone(), controller.clone());
        server.add_service(background_service(
            "redis store",
            StoreService::new(
                store,
                Arc::new(move || sets.refresh_store()),
                Arc::new(move |message| control.apply_remote(message)),
            ),
        ));
    }
    if let Some((config, names)) = acme {
        // Made after the controller, which installs the control state's ACME requests, so a
        // restart serves the requested certificates in storage from the first handshake.
        // With `gateway.store` the account and certificates live in Redis (state/acme/).
        let acme = state::acme::AcmeService::new(config, names)
            .with_store(controller.store(), controller.node());
        server.add_service(background_service("acme certificates", acme));
    }
    server.add_service(background_service(
        "rollout plans",
        RolloutService::new(controller.clone()),
    ));
    server.add_service(background_service(
        "stats history",
        HistoryService::new(controller.history()),
    ));
    if let Some(admin) = admin {
        if let Some(connections) = &budgets.admin {
            server.add_service(admin::admin_service(
                controller.clone(),
                &admin.listen.to_string(),
                admin.tokens,
                head_limits,
                connections.clone(),
            ));
        }
    }
    for origin in &demo_origins {
        server.add_service(demo::demo_origin_service(origin));
    }
    Ok(())
}

/// What serves `listener` in one worker.
fn endpoint<A: pingora_core::apps::HttpServerApp + Send + Sync + 'static>(
    listener: &config::Listener,
    guarded: &Arc<guard::GuardedApp<A>>,
    state: &Arc<arc_swap::ArcSwap<state::GatewayState>>,
    limits: &config::HeadLimits,
    connections: &Arc<Connections>,
) -> Endpoint<A> {
    let mut for_listener = guarded.for_listener(connections.clone());
    if matches!(listener.kind, ListenerKind::Plain { h2c: true }) {
        for_listener = for_listener.accepting_h2c();
    }
    let guarded = Arc::new(for_listener);
    let app = match &listener.kind {
        ListenerKind::Plain { .. } => ListenerApp::Plain(guarded.clone()),
        ListenerKind::Tls(tls) => ListenerApp::Tls(Arc::new(TlsApp::new(
            guarded.clone(),
            listener.addr.clone(),
            tls.clone(),
            state.clone(),
            limits.header_timeout,
            guarded.in_flight().clone(),
        ))),
        // The redirect listener gets the same head limits (and shutdown read-ahead) as the
        // proxy's: it faces the same clients.
        ListenerKind::RedirectHttps { https_port } => ListenerApp::Redirect(Arc::new(
            guard::GuardedApp::new(
                HttpServer::new_app(Redirector::new(state.clone(), *https_port)),
                *limits,
                guarded.in_flight().clone(),
            )
            .waiting_between_requests(state.clone())
            .for_listener(connections.clone()),
        )),
    };
    Endpoint {
        addr: listener.addr.clone(),
        app,
        connections: connections.clone(),
    }
}

/// What `-t` checks beside the file (`gateway` validated from `spec`, read from `source`):
/// the routes and groups made through the admin API, kept in `gateway.admin.state_file` when
/// it exists, merged over the file and validated as a running gateway would. A name both the
/// file and the API define is refused, naming both. Returns how many API objects were checked.
pub fn check_api_objects(
    source: &ConfigSource,
    spec: &GatewaySpec,
    gateway: &GatewayConfig,
) -> Result<usize, String> {
    match gateway.admin.as_ref().and_then(|a| a.state_file.as_deref()) {
        Some(state_file) => state::objects::check_state_file_objects(
            spec,
            state_file,
            &source.base_dir(),
            &source.describe(),
        ),
        None => Ok(0),
    }
}

/// A client listener without Pingora's 64 KiB L4 read buffer. Over plaintext it only costs
/// memory (64 KiB for every open connection, idle keep-alive ones included) and an extra copy
/// of every byte read, as Pingora reads the request head into its own buffer either way. Over
/// TLS, rustls reads whole records into its own buffer: with the L4 buffer below it the
/// gateway spent 4–8% more CPU per request (docs/performance.md#tls). Writes stay buffered, so
/// a response head and a small body still leave in one write.
fn client_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE))
}
