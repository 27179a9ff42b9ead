//! The worker model, nginx's inside one process: `threads: N` runs N proxy workers, each a
//! single-thread runtime with its own connections and upstream pool, all accepting on the same
//! listening sockets. One N-thread runtime instead costs more CPU per request as N grows
//! (docs/performance.md has the figures).
//!
//! Pingora shares a listening socket among the services that listen on one address by handing
//! each the same descriptor, and each closes it when it stops: with several workers the second
//! close hits a closed (or, worse, reused) descriptor. So each worker listens on a key of its
//! own in Pingora's table of listening sockets (`ADDR#worker-I`), holding its own duplicate of
//! the address's socket; the socket itself stays in the table under `ADDR`, owned by no
//! service. The whole table — the socket and the duplicates — goes to the new process on a
//! graceful upgrade, whose workers find their keys there.

use std::os::fd::{BorrowedFd, IntoRawFd};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::join_all;
use log::error;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::Stream;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::listening::Service as ListeningService;
use pingora_core::services::Service;

use super::connections::{AcceptGate, Connections};
use super::guard::GuardedApp;
use super::redirect::Redirector;
use super::tls::TlsApp;

/// The key of `addr` for worker `index` in the table of listening sockets.
fn worker_key(addr: &str, index: usize) -> String {
    format!("{addr}#worker-{index}")
}

/// What a worker runs on one listener: the guarded proxy (plaintext), TLS in front of it, or
/// the guarded redirect to https. The proxy itself is one per worker, shared by its listeners
/// (one upstream pool per worker).
pub(crate) enum ListenerApp<A> {
    Plain(Arc<GuardedApp<A>>),
    Tls(Arc<TlsApp<GuardedApp<A>>>),
    Redirect(Arc<GuardedApp<HttpServer<Redirector>>>),
}

/// A listener's app behind its budget of connections: each accepted connection is counted
/// while it is served, or closed at once when the listener is full ([`Connections::admit`]).
/// (What [`Limited`](super::connections::Limited) does for the admin and metrics listeners,
/// here in the same layer of futures that picks the listener's app: each layer costs
/// instructions on every poll of every connection.)
pub(crate) struct BudgetedListener<A> {
    app: ListenerApp<A>,
    connections: Arc<Connections>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for BudgetedListener<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_permit) = self.connections.admit() else {
            // Closing it frees the descriptor now; the client sees the connection closed.
            drop(session);
            return None;
        };
        match &self.app {
            ListenerApp::Plain(app) => app.process_new(session, shutdown).await,
            ListenerApp::Tls(app) => app.process_new(session, shutdown).await,
            ListenerApp::Redirect(app) => app.process_new(session, shutdown).await,
        }
    }

    async fn cleanup(&self) {
        match &self.app {
            ListenerApp::Plain(app) => app.cleanup().await,
            ListenerApp::Tls(app) => app.cleanup().await,
            ListenerApp::Redirect(app) => app.cleanup().await,
        }
    }
}

/// One listener of a worker: its address, what serves it and the listener's budget of
/// connections (one for the listener, shared by the workers).
pub(crate) struct Endpoint<A> {
    pub(crate) addr: String,
    pub(crate) app: ListenerApp<A>,
    pub(crate) connections: Arc<Connections>,
}

/// One proxy worker: one thread serving all the listeners, each on the worker's own duplicate
/// of its listening socket.
pub(crate) struct Worker<A> {
    services: Vec<ListeningService<BudgetedListener<A>>>,
    name: String,
    index: usize,
    addrs: Vec<String>,
}

impl<A: HttpServerApp + Send + Sync + 'static> Worker<A> {
    /// Worker `index` serving `endpoints`; `listener` makes the listener settings for a key
    /// of the table of listening sockets (the address is never parsed from it: the socket is
    /// in the table by then).
    pub(crate) fn new(
        index: usize,
        endpoints: Vec<Endpoint<A>>,
        listener: impl Fn(&str) -> ListenerConfig,
    ) -> Self {
        let name = format!("canary-gateway proxy worker {index}");
        let addrs = endpoints.iter().map(|e| e.addr.clone()).collect();
        let services = endpoints
            .into_iter()
            .map(|endpoint| {
                let mut service = ListeningService::new(
                    format!("{name} on {}", endpoint.addr),
                    BudgetedListener {
                        app: endpoint.app,
                        connections: endpoint.connections.clone(),
                    },
                );
                service.set_connection_filter(AcceptGate::new(endpoint.connections));
                service.threads = Some(1);
                service.add_listener(listener(&worker_key(&endpoint.addr, index)));
                service
            })
            .collect();
        Worker {
            services,
            name,
            index,
            addrs,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> Service for Worker<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        if let Some(table) = &fds {
            for addr in &self.addrs {
                if let Err(e) = share_socket(table, addr, self.index) {
                    // As Pingora does when it cannot bind: the gateway cannot serve.
                    error!("worker {}: cannot listen on {addr}: {e}", self.index);
                    std::process::exit(1);
                }
            }
        }
        // All the worker's listeners run on its one thread.
        join_all(
            self.services.iter_mut().map(|service| {
                service.start_service(fds.clone(), shutdown.clone(), listeners_per_fd)
            }),
        )
        .await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    /// Its own keys and the addresses whose sockets it duplicates, so that a graceful upgrade
    /// keeps both.
    fn listen_addresses(&self) -> Option<Vec<String>> {
        let mut keys: Vec<String> = self
            .services
            .iter()
            .filter_map(Service::listen_addresses)
            .flatten()
            .collect();
        keys.extend(self.addrs.iter().cloned());
        Some(keys)
    }
}

/// Puts worker `index`'s duplicate of `addr`'s socket in the table, binding `addr` first when
/// no one has (an inherited duplicate is used as it is). All under the table's lock, so two
/// workers starting at once do not both bind.
fn share_socket(table: &ListenFds, addr: &str, index: usize) -> std::io::Result<()> {
    let mut fds = table.lock();
    let key = worker_key(addr, index);
    if fds.get(&key).is_some() {
        return Ok(());
    }
    let socket = match fds.get(addr).copied() {
        Some(fd) => fd,
        None => {
            // As Pingora binds (address reuse); it listens again with its own backlog when it
            // takes the socket, and like its sockets this one does not block.
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            let fd = listener.into_raw_fd();
            fds.add(addr.to_string(), fd);
            fd
        }
    };
    // SAFETY: `socket` is a listening socket in the table, which keeps it open for the life of
    // the process (no service owns it).
    let copy = unsafe { BorrowedFd::borrow_raw(socket) }.try_clone_to_owned()?;
    fds.add(key, copy.into_raw_fd());
    Ok(())
}
