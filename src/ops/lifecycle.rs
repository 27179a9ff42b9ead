//! Process lifecycle: actions on signals (SIGHUP reload, SIGUSR1 log reopen), closing client
//! connections on upgrade, and a graceful shutdown that ends as soon as the
//! requests in flight are done instead of always sleeping Pingora's whole grace period.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use super::access_log::AccessLog;
use crate::proxy::InFlight;
use crate::state::Controller;

/// Runs `action` (on the blocking pool: loading a large users file is blocking work) every
/// time the process receives `signal`, until shutdown.
pub(crate) struct OnSignal {
    signal: tokio::signal::unix::SignalKind,
    /// What the action is, for logs ("reload the configuration").
    what: &'static str,
    action: Arc<dyn Fn() + Send + Sync>,
}

impl OnSignal {
    pub(crate) fn new(
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
    pub(crate) fn reload_on_hangup(controller: Arc<Controller>) -> Self {
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
    pub(crate) fn reopen_log_on_usr1(log: AccessLog) -> Self {
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
pub(crate) struct CloseConnectionsOnUpgrade {
    in_flight: InFlight,
}

impl CloseConnectionsOnUpgrade {
    pub(crate) fn new(in_flight: InFlight) -> Self {
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

/// How long no request may be in flight before a shutting-down process exits. A connection
/// counts from its accept (its TLS handshake, then its first request head: `proxy::guard`) and
/// each request from Pingora's reading its head; this covers the moments between one count
/// ending and the next beginning, all within one poll of the connection's task.
pub(crate) const QUIET_BEFORE_EXIT: Duration = Duration::from_millis(100);

/// The drain rule: done once no request has been in flight for [`QUIET_BEFORE_EXIT`].
#[derive(Debug, Default)]
pub(crate) struct Drain {
    quiet_since: Option<Instant>,
}

impl Drain {
    /// Records how many requests are in flight at `now`; true once the process may exit.
    pub(crate) fn observe(&mut self, in_flight: usize, now: Instant) -> bool {
        if in_flight > 0 {
            self.quiet_since = None;
            return false;
        }
        let since = *self.quiet_since.get_or_insert(now);
        now.duration_since(since) >= QUIET_BEFORE_EXIT
    }
}

/// Once a graceful shutdown (SIGTERM, or SIGQUIT after an upgrade) has started, waits until no
/// request has been in flight for [`QUIET_BEFORE_EXIT`], runs the exit hooks (the access log's
/// flush), removes the pid file if it still names this process, and ends the process.
///
/// Why not Pingora's own path: in Pingora 0.9 `Server::run` sleeps the whole
/// `grace_period_seconds` after broadcasting the shutdown (an uninterruptible
/// `thread::sleep`), then shuts the runtimes down, which drops whatever tasks are left. There is
/// no hook to end the grace period early, so a drained process would idle for the full period
/// (5 s by default, longer where operators raised it for slow requests). Exiting here skips
/// only that sleep, the runtimes' shutdown (every request is done by then; the access log is
/// flushed by the hook) and Pingora's last execution-phase broadcasts, which nothing in the
/// gateway subscribes to. Pingora never removes its pid file (`-d`), so this does, unless a
/// newer process (after `-u`) has already written its own pid there. If requests never drain,
/// Pingora's grace period ends the process as before.
pub(crate) struct ExitWhenDrained {
    in_flight: InFlight,
    pid_file: Option<PathBuf>,
    before_exit: Vec<Box<dyn Fn() + Send + Sync>>,
}

impl ExitWhenDrained {
    /// `pid_file`: Pingora's `pid_file`, removed at exit when it holds this process's pid.
    pub(crate) fn new(in_flight: InFlight, pid_file: Option<PathBuf>) -> Self {
        ExitWhenDrained {
            in_flight,
            pid_file,
            before_exit: Vec::new(),
        }
    }

    /// Adds work to do right before exiting (flushing logs).
    pub(crate) fn before_exit(&mut self, hook: impl Fn() + Send + Sync + 'static) {
        self.before_exit.push(Box::new(hook));
    }
}

/// Removes `path` if it holds `pid` (a newer process's pid file is left alone).
pub(crate) fn remove_pid_file_of(path: &Path, pid: u32) -> bool {
    let ours = std::fs::read_to_string(path).is_ok_and(|text| text.trim() == pid.to_string());
    ours && std::fs::remove_file(path).is_ok()
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
        let mut drain = Drain::default();
        while !drain.observe(self.in_flight.count(), Instant::now()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(
            "graceful shutdown: drained after {:?}, exiting",
            started.elapsed()
        );
        for hook in &self.before_exit {
            hook();
        }
        if let Some(path) = &self.pid_file {
            if remove_pid_file_of(path, std::process::id()) {
                info!("graceful shutdown: removed pid file {}", path.display());
            }
        }
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process may exit only after a full quiet period with nothing in flight; a request
    /// arriving during the quiet period starts it over.
    #[test]
    fn drain_waits_for_a_quiet_period() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut drain = Drain::default();
        assert!(!drain.observe(2, ms(0)));
        assert!(!drain.observe(0, ms(10)), "quiet just started");
        assert!(!drain.observe(0, ms(60)));
        assert!(!drain.observe(1, ms(80)), "a request arrived");
        assert!(!drain.observe(0, ms(150)));
        assert!(!drain.observe(0, ms(249)));
        assert!(drain.observe(0, ms(250)), "100 ms quiet");
    }

    #[test]
    fn only_our_pid_file_is_removed() {
        let dir = std::env::temp_dir().join(format!("cg-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("gateway.pid");
        std::fs::write(&path, "4242\n").expect("write");
        assert!(
            !remove_pid_file_of(&path, 1),
            "another process's file stays"
        );
        assert!(path.exists());
        assert!(remove_pid_file_of(&path, 4242));
        assert!(!path.exists());
        assert!(!remove_pid_file_of(&path, 4242), "already gone");
        std::fs::remove_dir_all(&dir).ok();
    }
}
