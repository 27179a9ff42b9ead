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

use async_trait::async_trait;
use log::error;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::ListenerConfig;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::listening::Service as ListeningService;
use pingora_core::services::Service;

/// The key of `addr` for worker `index` in the table of listening sockets.
fn worker_key(addr: &str, index: usize) -> String {
    format!("{addr}#worker-{index}")
}

/// One proxy worker: a listening service with one thread, on its own duplicates of the
/// listening sockets.
pub struct Worker<A> {
    inner: ListeningService<A>,
    index: usize,
    addrs: Vec<String>,
}

impl<A: ServerApp + Send + Sync + 'static> Worker<A> {
    /// Worker `index` serving `app` on `addrs`; `listener` makes the listener settings for a
    /// key (the address is never parsed from it: the socket is in the table by then).
    pub fn new(
        index: usize,
        app: A,
        addrs: &[String],
        listener: impl Fn(&str) -> ListenerConfig,
    ) -> Self {
        let mut inner = ListeningService::new(format!("canary-gateway proxy worker {index}"), app);
        inner.threads = Some(1);
        for addr in addrs {
            inner.add_listener(listener(&worker_key(addr, index)));
        }
        Worker {
            inner,
            index,
            addrs: addrs.to_vec(),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> Service for Worker<A> {
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
        self.inner
            .start_service(fds, shutdown, listeners_per_fd)
            .await
    }

    fn name(&self) -> &str {
        Service::name(&self.inner)
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    /// Its own keys and the addresses whose sockets it duplicates, so that a graceful upgrade
    /// keeps both.
    fn listen_addresses(&self) -> Option<Vec<String>> {
        let mut keys = Service::listen_addresses(&self.inner)?;
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
