//! Webhook notices (`gateway.notify`): each webhook has a bounded queue that the controller's
//! notice sink fills (never waiting: when the queue is full the oldest notice is dropped and
//! counted) and a task of the background service that empties it, posting each notice with a
//! small HTTP/1.1 client over TCP (and rustls for `https://`), retrying with a doubling pause.
//! A slow, failing or unreachable webhook delays only its own later notices: never a change,
//! a request or the admin API.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use log::{debug, error, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::tls::{ClientConfig, RootCertStore, ServerName, TlsConnector};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::{NotifyFormat, NotifyHook};
use crate::state::figures::FigureSummary;
use crate::state::metrics::METRICS;
use crate::state::notice::{Notice, NoticeSink};

/// Notices a webhook's queue holds; past it the oldest is dropped (and counted).
pub(crate) const QUEUE_LIMIT: usize = 256;
/// The pause after the first failed attempt; it doubles after each, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The most of a response's head read for its status line.
const MAX_STATUS_LINE: usize = 4096;

/// One webhook: its settings and its queue.
struct Hook {
    /// Its index in `gateway.notify`: the metrics' label (the URL may hold a secret).
    label: String,
    config: NotifyHook,
    queue: Mutex<VecDeque<Arc<Notice>>>,
    wake: Notify,
}

impl Hook {
    /// Queues a notice without waiting, dropping the oldest when the queue is full.
    fn push(&self, notice: Arc<Notice>) {
        let dropped = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let dropped = if queue.len() >= QUEUE_LIMIT {
                queue.pop_front()
            } else {
                None
            };
            queue.push_back(notice);
            dropped
        };
        if let Some(old) = dropped {
            METRICS
                .notifications
                .with_label_values(&[&self.label, "dropped"])
                .inc();
            debug!(
                "notify {}: queue full, dropped the notice of version {}",
                self.config.url.shown(),
                old.version
            );
        }
        // A permit is kept when the task is busy, so no wake-up is lost.
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<Arc<Notice>> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

/// The webhooks of `gateway.notify`, their queues and the service that delivers.
pub(crate) struct Notifier {
    hooks: Vec<Arc<Hook>>,
    /// Built once when a webhook is `https://`: the system's trusted roots.
    tls: Option<TlsConnector>,
}

impl Notifier {
    pub(crate) fn new(hooks: Vec<NotifyHook>) -> Notifier {
        let tls = if hooks.iter().any(|h| h.url.tls) {
            tls_connector()
        } else {
            None
        };
        let hooks = hooks
            .into_iter()
            .enumerate()
            .map(|(i, config)| {
                Arc::new(Hook {
                    label: i.to_string(),
                    config,
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                })
            })
            .collect();
        Notifier { hooks, tls }
    }

    /// The controller's sink: queues each notice for every webhook that asks for its events.
    pub(crate) fn sink(&self) -> NoticeSink {
        let hooks = self.hooks.clone();
        Arc::new(move |notice: Notice| {
            let notice = Arc::new(notice);
            for hook in hooks.iter().filter(|h| notice.matches(&h.config.events)) {
                hook.push(notice.clone());
            }
        })
    }
}

/// A TLS client trusting the system's roots (a webhook whose certificate they do not vouch for
/// fails, and is counted as failed); `None`, logged, if rustls refuses its own defaults.
fn tls_connector() -> Option<TlsConnector> {
    let mut roots = RootCertStore::empty();
    match pingora_core::tls::load_native_certs() {
        Ok(certs) => {
            let (added, ignored) = roots.add_parsable_certificates(certs);
            debug!("notify: {added} trusted roots ({ignored} unusable)");
        }
        Err(e) => warn!("notify: cannot read the system's trusted roots: {e}"),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(builder) => Some(TlsConnector::from(Arc::new(
            builder.with_root_certificates(roots).with_no_client_auth(),
        ))),
        Err(e) => {
            error!("notify: no TLS client ({e}): https:// webhooks will fail");
            None
        }
    }
}

#[async_trait]
impl BackgroundService for Notifier {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self
            .hooks
            .iter()
            .map(|hook| tokio::spawn(deliver_forever(hook.clone(), self.tls.clone())))
            .collect();
        let _ = shutdown.changed().await;
        for task in tasks {
            task.abort();
        }
    }
}

/// Empties one webhook's queue, one notice at a time, for as long as the process runs.
async fn deliver_forever(hook: Arc<Hook>, tls: Option<TlsConnector>) {
    loop {
        match hook.pop() {
            Some(notice) => deliver(&hook, tls.as_ref(), &notice).await,
            None => hook.wake.notified().await,
        }
    }
}

/// Posts one notice, with up to `retries` more attempts after a failed one.
async fn deliver(hook: &Hook, tls: Option<&TlsConnector>, notice: &Notice) {
    let body = body(hook.config.format, notice);
    let request = request(hook, &body);
    let mut pause = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        let outcome = tokio::time::timeout(hook.config.timeout, post(hook, tls, &request))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", hook.config.timeout)));
        let error = match outcome {
            Ok(status) if (200..300).contains(&status) => {
                METRICS
                    .notifications
                    .with_label_values(&[&hook.label, "sent"])
                    .inc();
                return;
            }
            Ok(status) => format!("answered {status}"),
            Err(e) => e,
        };
        if attempt >= hook.config.retries {
            METRICS
                .notifications
                .with_label_values(&[&hook.label, "failed"])
                .inc();
            warn!(
                "notify {}: the notice of version {} ({} {}) failed after {} attempt(s): {error}",
                hook.config.url.shown(),
                notice.version,
                notice.actor,
                notice.action,
                attempt + 1
            );
            return;
        }
        debug!(
            "notify {}: attempt {} failed: {error}; again in {pause:?}",
            hook.config.url.shown(),
            attempt + 1
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
        attempt += 1;
        METRICS
            .notification_retries
            .with_label_values(&[&hook.label])
            .inc();
    }
}

/// The whole request: head and JSON body, the connection closed after the answer.
fn request(hook: &Hook, body: &str) -> Vec<u8> {
    let url = &hook.config.url;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: canary-gateway/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.target,
        url.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    request
}

/// One attempt: connect (and TLS), send, read the status code.
async fn post(hook: &Hook, tls: Option<&TlsConnector>, request: &[u8]) -> Result<u16, String> {
    let url = &hook.config.url;
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    match (url.tls, tls) {
        (true, Some(connector)) => {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| format!("{:?} is no TLS server name: {e}", url.host))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(stream, request).await
        }
        (true, None) => Err("no TLS client was built".into()),
        (false, _) => exchange(tcp, request).await,
    }
}

/// Sends the request and reads the response's status line (the rest is not needed).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<u16, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line_end = loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            break end;
        }
        if head.len() > MAX_STATUS_LINE {
            return Err("the status line is too long".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            return Err("closed without an answer".into());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    status_code(&head[..line_end]).ok_or_else(|| {
        format!(
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&head[..line_end.min(80)])
        )
    })
}

/// `HTTP/1.1 204 No Content` → 204.
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// The body a webhook gets: the notice's fields with `events`, `timestamp` and `text`, or only
/// `{"text": …}` for `slack`.
pub(crate) fn body(format: NotifyFormat, notice: &Notice) -> String {
    let text = text(notice);
    let value = match format {
        NotifyFormat::Slack => serde_json::json!({ "text": text }),
        NotifyFormat::Json => {
            let mut value = serde_json::to_value(notice).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                let events: Vec<&str> = notice.events.iter().map(|e| e.as_str()).collect();
                object.insert("events".into(), events.into());
                object.insert("timestamp".into(), timestamp(notice.at_ms).into());
                object.insert("text".into(), text.into());
            }
            value
        }
    };
    value.to_string()
}

/// RFC 3339 in UTC, to the millisecond.
fn timestamp(at_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// The one line a person reads (Slack's `text`): what happened where, by whom, with the
/// step's figures when a plan acted on them.
pub(crate) fn text(notice: &Notice) -> String {
    let place = match (&notice.route, &notice.rule) {
        (Some(route), Some(rule)) => format!("route {route}, rule {rule}"),
        (Some(route), None) => format!("route {route}"),
        (None, _) => "every route".to_string(),
    };
    let mut line = format!(
        "canary-gateway {}: {place}: {} by {}: {} (version {})",
        notice.event, notice.action, notice.actor, notice.detail, notice.version
    );
    if let Some(figures) = &notice.figures {
        line.push_str(&format!(
            "; canary {}, baseline {}",
            summary(&figures.canary),
            summary(&figures.baseline)
        ));
    }
    line
}

fn summary(figures: &FigureSummary) -> String {
    let median = figures
        .median_ms
        .map_or(String::new(), |m| format!(", median {m:.1} ms"));
    format!(
        "{} requests, {:.2}% errors{median}",
        figures.requests,
        figures.error_rate * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyEvent;
    use crate::state::audit::AuditEntry;
    use crate::state::figures::StepFigures;

    fn notice() -> Notice {
        let mut entry = AuditEntry::now(
            "plan",
            Some("api"),
            Some("rollout"),
            "plan_rollback",
            "errors 20% over stable's 0%".into(),
        );
        entry.version = 12;
        entry.at_ms = 1_700_000_000_123;
        let group = |requests, errors: u64| FigureSummary {
            requests,
            errors,
            error_rate: errors as f64 / requests as f64,
            p99_ms: Some(9.0),
            median_ms: Some(2.5),
        };
        entry.figures = Some(StepFigures {
            canary: group(100, 20),
            baseline: group(400, 0),
            tests: Vec::new(),
        });
        Notice::of(&entry, 30, "node-a")
    }

    #[test]
    fn the_json_body_carries_the_fields_and_a_text() {
        let json: serde_json::Value =
            serde_json::from_str(&body(NotifyFormat::Json, &notice())).expect("JSON");
        assert_eq!(json["event"], "rollback");
        assert_eq!(json["events"], serde_json::json!(["rollback"]));
        assert_eq!(json["action"], "plan_rollback");
        assert_eq!(json["route"], "api");
        assert_eq!(json["rule"], "rollout");
        assert_eq!(json["actor"], "plan");
        assert_eq!(json["version"], 12);
        assert_eq!(json["generation"], 30);
        assert_eq!(json["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["figures"]["canary"]["errors"], 20);
        assert_eq!(
            json["text"],
            "canary-gateway rollback: route api, rule rollout: plan_rollback by plan: errors 20% over stable's 0% (version 12); canary 100 requests, 20.00% errors, median 2.5 ms, baseline 400 requests, 0.00% errors, median 2.5 ms"
        );
        let slack: serde_json::Value =
            serde_json::from_str(&body(NotifyFormat::Slack, &notice())).expect("JSON");
        assert_eq!(slack, serde_json::json!({ "text": json["text"] }));
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let hook = Hook {
            label: "0".into(),
            config: NotifyHook {
                url: crate::config::WebhookUrl {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: 1,
                    authority: "127.0.0.1:1".into(),
                    target: "/".into(),
                },
                format: NotifyFormat::Json,
                events: vec![NotifyEvent::Rollback],
                timeout: Duration::from_secs(1),
                retries: 0,
            },
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        };
        for version in 0..QUEUE_LIMIT as u64 + 3 {
            hook.push(Arc::new(Notice {
                version,
                ..notice()
            }));
        }
        assert_eq!(hook.queue.lock().expect("queue").len(), QUEUE_LIMIT);
        assert_eq!(hook.pop().expect("oldest kept").version, 3);
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 500"), Some(500));
        assert_eq!(status_code(b"SSH-2.0-x"), None);
        assert_eq!(status_code(b"HTTP/1.1 20"), None);
    }
}
