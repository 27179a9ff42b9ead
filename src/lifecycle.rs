//! Process lifecycle: reload on SIGHUP, and a graceful shutdown that ends as soon as the
//! requests in flight are done instead of always sleeping Pingora's whole grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::live::Controller;
use crate::proxy::InFlight;

/// Reloads the configuration whenever the process receives SIGHUP.
pub struct ReloadOnHangup {
    controller: Arc<Controller>,
}

impl ReloadOnHangup {
    pub fn new(controller: Arc<Controller>) -> Self {
        ReloadOnHangup { controller }
    }
}

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    info!("SIGHUP received, reloading the configuration");
                    let controller = self.controller.clone();
                    // Loading a large users file is blocking work.
                    let outcome = tokio::task::spawn_blocking(move || controller.reload()).await;
                    if let Err(e) = outcome {
                        error!("reload task failed: {e}");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// On SIGQUIT (the old process of a graceful upgrade), starts closing client connections after
/// their next response, so keep-alive clients reconnect to the new process during Pingora's
/// close period instead of losing a request when the old process stops.
pub struct CloseConnectionsOnUpgrade {
    in_flight: InFlight,
}

impl CloseConnectionsOnUpgrade {
    pub fn new(in_flight: InFlight) -> Self {
        CloseConnectionsOnUpgrade { in_flight }
    }
}

#[async_trait]
impl BackgroundService for CloseConnectionsOnUpgrade {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut quits = match signal(SignalKind::quit()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot listen for SIGQUIT: {e}");
                return;
            }
        };
        tokio::select! {
            _ = quits.recv() => {
                info!("SIGQUIT: handing over to the new process; closing client connections after their next response");
                self.in_flight.start_closing();
            }
            _ = shutdown.changed() => {}
        }
    }
}

/// How long no request may be in flight before a shutting-down process exits. Covers the gap
/// between accepting a connection and its request being counted.
pub const QUIET_BEFORE_EXIT: Duration = Duration::from_millis(100);

/// Once a graceful shutdown (SIGTERM, or SIGQUIT after an upgrade) has started, waits until no
/// request has been in flight for [`QUIET_BEFORE_EXIT`], runs the exit hooks and ends the
/// process. Pingora's grace period stays the upper bound.
pub struct ExitWhenDrained {
    in_flight: InFlight,
    before_exit: Vec<Box<dyn Fn() + Send + Sync>>,
}

impl ExitWhenDrained {
    pub fn new(in_flight: InFlight) -> Self {
        ExitWhenDrained {
            in_flight,
            before_exit: Vec::new(),
        }
    }

    /// Adds work to do right before exiting (flushing logs).
    pub fn before_exit(&mut self, hook: impl Fn() + Send + Sync + 'static) {
        self.before_exit.push(Box::new(hook));
    }
}

#[async_trait]
impl BackgroundService for ExitWhenDrained {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        self.in_flight.start_closing();
        let started = Instant::now();
        info!(
            "graceful shutdown: draining {} request(s) in flight",
            self.in_flight.count()
        );
        let mut quiet_since: Option<Instant> = None;
        loop {
            if self.in_flight.count() == 0 {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= QUIET_BEFORE_EXIT {
                    break;
                }
            } else {
                quiet_since = None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(
            "graceful shutdown: drained after {:?}, exiting",
            started.elapsed()
        );
        for hook in &self.before_exit {
            hook();
        }
        std::process::exit(0);
    }
}

/// Reopens the access log on SIGUSR1 (after logrotate moved the file).
pub struct ReopenLogOnUsr1 {
    log: crate::access_log::AccessLog,
}

impl ReopenLogOnUsr1 {
    pub fn new(log: crate::access_log::AccessLog) -> Self {
        ReopenLogOnUsr1 { log }
    }
}

#[async_trait]
impl BackgroundService for ReopenLogOnUsr1 {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot listen for SIGUSR1, log reopening is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    info!("SIGUSR1: reopening the access log");
                    self.log.reopen();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
