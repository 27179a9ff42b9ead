//! A real headless Chromium (Debian's `chromium`, installed by `scripts/setup.sh test`) driven
//! over the Chrome DevTools Protocol on a WebSocket: navigate, run JavaScript in the page,
//! wait for a condition, take a screenshot, and record the URL of every request the page makes.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::{TempDir, READY_TIMEOUT};

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Every URL the page requested, in order (`Network.requestWillBeSent`).
    pub requests: Vec<String>,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens one blank page.
    pub fn start() -> Browser {
        let profile = TempDir::new("chromium");
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is installed by scripts/setup.sh test");
        // Chromium writes its port and the browser's WebSocket path here once it listens.
        let active = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.to_string(), path.to_string());
                }
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "chromium did not open its DevTools port within {READY_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}{path}"))
            .expect("connect to chromium's DevTools");
        if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
            stream
                .set_read_timeout(Some(COMMAND_TIMEOUT))
                .expect("read timeout");
        }
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            requests: Vec::new(),
            _profile: profile,
        };
        let target = browser.command("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.command(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        for domain in ["Page.enable", "Runtime.enable", "Network.enable"] {
            browser.command(domain, json!({}));
        }
        browser
    }

    /// Sends one command (to the page once attached) and returns its result; events read
    /// meanwhile are recorded.
    fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .expect("send a DevTools command");
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < COMMAND_TIMEOUT,
                "DevTools command {method} got no answer"
            );
            let text = match self.ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("DevTools command {method} got no answer: {e}")
                }
                Err(e) => panic!("DevTools connection failed during {method}: {e}"),
            };
            let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if value["id"] == json!(id) {
                if let Some(error) = value.get("error") {
                    panic!("DevTools command {method} failed: {error}");
                }
                return value["result"].clone();
            }
            if value["method"] == "Network.requestWillBeSent" {
                if let Some(url) = value["params"]["request"]["url"].as_str() {
                    self.requests.push(url.to_string());
                }
            }
        }
    }

    /// Opens `url` and waits until the document has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.command("Page.navigate", json!({ "url": url }));
        self.wait_for(
            "the page loads",
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            READY_TIMEOUT,
        );
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.command(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("script failed: {expression}\n{exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `condition` (JavaScript) until it is true; fails naming `what` after `limit`.
    pub fn wait_for(&mut self, what: &str, condition: &str, limit: Duration) {
        let started = Instant::now();
        loop {
            if self.eval(&format!("Boolean({condition})")) == json!(true) {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}; page text:\n{}",
                self.eval("document.body ? document.body.innerText : ''")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The visible text of the element `selector` ("" when there is none).
    pub fn text(&mut self, selector: &str) -> String {
        let script = format!(
            "(document.querySelector({}) || {{innerText: ''}}).innerText",
            json!(selector)
        );
        self.eval(&script).as_str().unwrap_or("").to_string()
    }

    /// Clicks the element `selector`.
    pub fn click(&mut self, selector: &str) {
        let script = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) throw new Error('no ' + {s}); e.click(); }})()",
            s = json!(selector)
        );
        self.eval(&script);
    }

    /// Sets the value of the input `selector` as typing would (an `input` event follows).
    pub fn fill(&mut self, selector: &str, value: &str) {
        let script = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) throw new Error('no ' + {s}); e.focus(); e.value = {v}; e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()",
            s = json!(selector),
            v = json!(value)
        );
        self.eval(&script);
    }

    /// Confirms the page's confirmation dialog once it is open; returns what it said.
    pub fn confirm(&mut self) -> String {
        self.wait_for(
            "the confirmation dialog",
            "document.getElementById('confirm').open",
            Duration::from_secs(5),
        );
        let text = self.text("#confirm-text");
        self.click("#confirm-ok");
        text
    }

    /// Lays the page out `width` × `height` CSS pixels wide (a phone at 390 × 844), as a
    /// window of that size would; the page reflows at once.
    pub fn viewport(&mut self, width: u32, height: u32) {
        self.command(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.command(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let data = shot["data"].as_str().expect("screenshot data");
        std::fs::write(path, base64_decode(data)).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Standard base64 (with padding), as DevTools sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
