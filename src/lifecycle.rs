//! Process lifecycle: actions on signals (SIGHUP reload, SIGUSR1 log reopen), closing client
//! connections on upgrade, and a graceful shutdown that ends as soon as the
//! requests in flight are done instead of always sleeping Pingora's whole grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::live::Controller;
use crate::proxy::InFlight;

/// Runs `action` (on the blocking pool: loading a large users file is blocking work) every
/// time the process receives `signal`, until shutdown.
pub struct OnSignal {
    signal: tokio::signal::unix::SignalKind,
    /// What the action is, for logs ("reload the configuration").
    what: &'static str,
    action: Arc<dyn Fn() + Send + Sync>,
}

impl OnSignal {
    pub fn new(
        signal: tokio::signal::unix::SignalKind,
        what: &'static str,
        action: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        OnSignal {
            signal,
            what,
            action: Arc::new(action),
        }
    }

    /// SIGHUP reloads the configuration.
    pub fn reload_on_hangup(controller: Arc<Controller>) -> Self {
        Self::new(
            tokio::signal::unix::SignalKind::hangup(),
            "reload the configuration",
            move || {
                // The outcome (and any error) is logged and kept for /status by reload().
                let _ = controller.reload();
            },
        )
    }

    /// SIGUSR1 reopens the access log (after logrotate moved the file).
    pub fn reopen_log_on_usr1(log: crate::access_log::AccessLog) -> Self {
        Self::new(
            tokio::signal::unix::SignalKind::user_defined1(),
            "reopen the access log",
            move || log.reopen(),
        )
    }
}

#[async_trait]
impl BackgroundService for OnSignal {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut signals = match tokio::signal::unix::signal(self.signal) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot listen for the signal to {}: {e}", self.what);
                return;
            }
        };
        loop {
            tokio::select! {
                _ = signals.recv() => {
                    info!("signal received: {}", self.what);
                    let action = self.action.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || action()).await {
                        error!("{} failed: {e}", self.what);
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
