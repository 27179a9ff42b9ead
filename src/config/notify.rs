//! Validation of `gateway.notify`: each webhook's URL, body format, events, timeout and
//! retries, into the typed hooks the notifier (`ops::notify`) delivers to.

use std::time::Duration;

use super::parse::positive_duration;
use super::spec::NotifySpec;
use super::{key_error, KeyError};

/// A rollout event a webhook can ask for (`gateway.notify[i].events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NotifyEvent {
    /// A plan passed its step and moved to the next.
    Advance,
    /// A plan paused: a failed step (`on_failure: pause`) or an operator's pause.
    Pause,
    /// Users sent back to the default group: a plan's failed step (`on_failure: rollback`), an
    /// operator's abort, or a rollback (kill switch) of a route or of every route.
    Rollback,
    /// A plan passed its last step.
    Complete,
    /// Any change an operator made through the admin API.
    Manual,
}

impl NotifyEvent {
    pub(crate) const ALL: [NotifyEvent; 5] = [
        NotifyEvent::Advance,
        NotifyEvent::Pause,
        NotifyEvent::Rollback,
        NotifyEvent::Complete,
        NotifyEvent::Manual,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Advance => "advance",
            NotifyEvent::Pause => "pause",
            NotifyEvent::Rollback => "rollback",
            NotifyEvent::Complete => "complete",
            NotifyEvent::Manual => "manual",
        }
    }

    fn parse(text: &str) -> Option<NotifyEvent> {
        NotifyEvent::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// What a webhook's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotifyFormat {
    /// The event's fields, with a Slack-compatible `text` among them.
    Json,
    /// `{"text": "<one line>"}` only.
    Slack,
}

/// Where a webhook is posted, split once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookUrl {
    pub(crate) tls: bool,
    /// The host name or address (without brackets), for connecting and for TLS's server name.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `Host` header: the URL's authority as written.
    pub(crate) authority: String,
    /// The request target: path and query (`/` when the URL has none).
    pub(crate) target: String,
}

impl WebhookUrl {
    /// `scheme://host[:port]` only, for logs: the path may be a secret.
    pub(crate) fn shown(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// One webhook (`gateway.notify[i]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NotifyHook {
    pub(crate) url: WebhookUrl,
    pub(crate) format: NotifyFormat,
    /// The events posted to it (every one when the file names none).
    pub(crate) events: Vec<NotifyEvent>,
    /// The bound on one attempt: connect, send, read the status line (default 5 s).
    pub(crate) timeout: Duration,
    /// Attempts after a failed one (default 3).
    pub(crate) retries: u32,
}

/// The most retries a webhook may ask for: with the doubling pause capped, more only keeps
/// one event in the queue for minutes while later ones wait.
pub(crate) const MAX_RETRIES: u32 = 10;

pub(super) fn validate_notify(hooks: &[NotifySpec]) -> Result<Vec<NotifyHook>, KeyError> {
    hooks
        .iter()
        .enumerate()
        .map(|(i, hook)| validate_hook(i, hook))
        .collect()
}

fn validate_hook(i: usize, hook: &NotifySpec) -> Result<NotifyHook, KeyError> {
    let key = |k: &str| format!("gateway.notify[{i}].{k}");
    let url = webhook_url(&hook.webhook).map_err(|m| key_error(key("webhook"), m))?;
    let format = match hook.format.as_deref() {
        None | Some("json") => NotifyFormat::Json,
        Some("slack") => NotifyFormat::Slack,
        Some(other) => {
            return Err(key_error(
                key("format"),
                format!("{other:?} is not a format (json or slack)"),
            ))
        }
    };
    let events = match &hook.events {
        None => NotifyEvent::ALL.to_vec(),
        Some(names) if names.is_empty() => {
            return Err(key_error(
                key("events"),
                "names no event: leave it out for all of them".into(),
            ))
        }
        Some(names) => {
            let mut events = Vec::with_capacity(names.len());
            for (j, name) in names.iter().enumerate() {
                let event = NotifyEvent::parse(name).ok_or_else(|| {
                    let all: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
                    key_error(
                        format!("gateway.notify[{i}].events[{j}]"),
                        format!("{name:?} is not an event ({})", all.join(", ")),
                    )
                })?;
                if !events.contains(&event) {
                    events.push(event);
                }
            }
            events
        }
    };
    let timeout = match &hook.timeout {
        Some(text) => positive_duration(text).map_err(|m| key_error(key("timeout"), m))?,
        None => Duration::from_secs(5),
    };
    let retries = match hook.retries {
        Some(n) if n > MAX_RETRIES => {
            return Err(key_error(
                key("retries"),
                format!("{n} is over the maximum {MAX_RETRIES}"),
            ))
        }
        Some(n) => n,
        None => 3,
    };
    Ok(NotifyHook {
        url,
        format,
        events,
        timeout,
        retries,
    })
}

/// Splits an `http://` or `https://` URL (the value is not repeated in errors: its path may
/// be a secret).
fn webhook_url(text: &str) -> Result<WebhookUrl, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("is not a URL ({e}; value not shown)"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("must be an http:// or https:// URL (value not shown)".into()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "names no host (value not shown)".to_string())?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials before the host (value not shown)".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("names no host (value not shown)".into());
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    Ok(WebhookUrl {
        tls,
        host: host.to_string(),
        port,
        authority: authority.as_str().to_string(),
        target: if target.is_empty() {
            "/".into()
        } else {
            target
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(webhook: &str) -> NotifySpec {
        NotifySpec {
            webhook: webhook.into(),
            format: None,
            events: None,
            timeout: None,
            retries: None,
        }
    }

    #[test]
    fn defaults_every_event_json_five_seconds_three_retries() {
        let hook = validate_hook(0, &spec("http://127.0.0.1:9999/hook?x=1")).expect("valid");
        assert_eq!(hook.events, NotifyEvent::ALL.to_vec());
        assert_eq!(hook.format, NotifyFormat::Json);
        assert_eq!(hook.timeout, Duration::from_secs(5));
        assert_eq!(hook.retries, 3);
        assert_eq!(
            hook.url,
            WebhookUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9999,
                authority: "127.0.0.1:9999".into(),
                target: "/hook?x=1".into(),
            }
        );
        let tls = validate_hook(0, &spec("https://[::1]")).expect("valid");
        assert_eq!((tls.url.tls, tls.url.port), (true, 443));
        assert_eq!(
            (tls.url.host.as_str(), tls.url.target.as_str()),
            ("::1", "/")
        );
        assert_eq!(tls.url.shown(), "https://[::1]");
    }

    /// A key, how to spoil it, and words its error must hold.
    type Case = (&'static str, fn(&mut NotifySpec), &'static str);

    /// One bad value per row, and the key its error names.
    #[test]
    fn errors_name_the_key() {
        let cases: [Case; 8] = [
            ("webhook", |s| s.webhook = "ftp://x/y".into(), "http://"),
            ("webhook", |s| s.webhook = "/no/host".into(), "http://"),
            (
                "webhook",
                |s| s.webhook = "http://u:p@x/".into(),
                "credentials",
            ),
            ("format", |s| s.format = Some("xml".into()), "json or slack"),
            (
                "events[1]",
                |s| s.events = Some(vec!["pause".into(), "held".into()]),
                "\"held\"",
            ),
            ("events", |s| s.events = Some(vec![]), "no event"),
            (
                "timeout",
                |s| s.timeout = Some("0s".into()),
                "more than zero",
            ),
            ("retries", |s| s.retries = Some(11), "maximum 10"),
        ];
        for (key, edit, words) in cases {
            let mut s = spec("http://127.0.0.1:1/secret-path");
            edit(&mut s);
            let e = validate_hook(2, &s).expect_err(key);
            assert_eq!(e.key, format!("gateway.notify[2].{key}"));
            assert!(e.message.contains(words), "{key}: {}", e.message);
            assert!(!e.message.contains("secret-path"), "{}", e.message);
        }
    }
}
