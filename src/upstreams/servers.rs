//! Each configured server's mode (enabled, draining, disabled: set through the admin API) and
//! its requests in flight, kept in the pool so that a pool kept across states (a reload or a
//! control change that leaves the group's settings alone) keeps them with its health and
//! connections. The request path reads a mode with one atomic load (none at all while every
//! server of the group is enabled) and counts a request with one atomic add and one sub.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::GroupConfig;

/// What an operator made of a server (absent from the control state: enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMode {
    /// No new requests; the ones in flight finish (`draining` until none is left, then
    /// `drained`).
    Draining,
    /// No requests at all (those in flight when it was disabled still finish).
    Disabled,
}

/// A server's mode as the request path reads it: `ENABLED` or a [`ServerMode`].
const ENABLED: u8 = 0;
const DRAINING: u8 = 1;
const DISABLED: u8 = 2;

fn encode(mode: Option<ServerMode>) -> u8 {
    match mode {
        None => ENABLED,
        Some(ServerMode::Draining) => DRAINING,
        Some(ServerMode::Disabled) => DISABLED,
    }
}

fn decode(code: u8) -> Option<ServerMode> {
    match code {
        DRAINING => Some(ServerMode::Draining),
        DISABLED => Some(ServerMode::Disabled),
        _ => None,
    }
}

/// One configured server: as written in the group, its mode and its requests in flight.
struct Slot {
    written: String,
    mode: AtomicU8,
    in_flight: AtomicUsize,
}

/// What `/status` shows of one configured server besides its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUse {
    /// The server as written in the group (`ip:port`, or `name:port`).
    pub(crate) written: String,
    pub(crate) mode: Option<ServerMode>,
    /// Requests sent to it that have not finished.
    pub(crate) in_flight: usize,
}

impl ServerUse {
    /// `enabled`, `draining` (requests still in flight), `drained` (idle) or `disabled`.
    pub(crate) fn mode_word(&self) -> &'static str {
        match self.mode {
            None => "enabled",
            Some(ServerMode::Draining) if self.in_flight > 0 => "draining",
            Some(ServerMode::Draining) => "drained",
            Some(ServerMode::Disabled) => "disabled",
        }
    }
}

/// The group's configured servers: address servers first (in configuration order), then the
/// named ones.
pub(super) struct Servers {
    slots: Box<[Slot]>,
    /// Address servers' addresses, sorted, with their slot.
    by_addr: Box<[(SocketAddr, usize)]>,
    /// How many slots are not enabled: while 0, selection reads no mode at all.
    held: AtomicUsize,
}

impl Servers {
    pub(super) fn new(config: &GroupConfig) -> Servers {
        let slots: Box<[Slot]> = config
            .servers
            .iter()
            .map(|s| s.addr.to_string())
            .chain(
                config
                    .named
                    .iter()
                    .map(|n| format!("{}:{}", n.host, n.port)),
            )
            .map(|written| Slot {
                written,
                mode: AtomicU8::new(ENABLED),
                in_flight: AtomicUsize::new(0),
            })
            .collect();
        let mut by_addr: Vec<(SocketAddr, usize)> = config
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.addr, i))
            .collect();
        by_addr.sort();
        Servers {
            slots,
            by_addr: by_addr.into(),
            held: AtomicUsize::new(0),
        }
    }

    /// The slot of an address server, or of the named server (`named(addr)`, an index among
    /// the named ones) that resolved to `addr`.
    pub(super) fn slot_of(
        &self,
        addr: SocketAddr,
        named: impl FnOnce(SocketAddr) -> Option<usize>,
    ) -> Option<usize> {
        match self.by_addr.binary_search_by(|(a, _)| a.cmp(&addr)) {
            Ok(i) => self.by_addr.get(i).map(|(_, slot)| *slot),
            Err(_) => named(addr).map(|i| self.by_addr.len() + i),
        }
    }

    /// Whether every server is enabled (selection then skips the mode lookup).
    pub(super) fn all_enabled(&self) -> bool {
        self.held.load(Ordering::Relaxed) == 0
    }

    /// Whether the server in `slot` takes new requests.
    pub(super) fn takes_requests(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .is_none_or(|s| s.mode.load(Ordering::Relaxed) == ENABLED)
    }

    /// Sets every server's mode: `mode_of(written)` (`None`: enabled).
    pub(super) fn set_modes(&self, mode_of: impl Fn(&str) -> Option<ServerMode>) {
        let mut held = 0;
        for slot in self.slots.iter() {
            let code = encode(mode_of(&slot.written));
            slot.mode.store(code, Ordering::Relaxed);
            held += usize::from(code != ENABLED);
        }
        self.held.store(held, Ordering::Relaxed);
    }

    /// Counts a request sent to the server in `slot`.
    pub(super) fn begin(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.in_flight.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the end of a request [`Servers::begin`] counted.
    pub(super) fn end(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether `written` names one of the group's servers.
    pub(super) fn has(&self, written: &str) -> bool {
        self.slots.iter().any(|s| s.written == written)
    }

    /// Every configured server's mode and requests in flight, in configuration order.
    pub(super) fn uses(&self) -> Vec<ServerUse> {
        self.slots
            .iter()
            .map(|s| ServerUse {
                written: s.written.clone(),
                mode: decode(s.mode.load(Ordering::Relaxed)),
                in_flight: s.in_flight.load(Ordering::Relaxed),
            })
            .collect()
    }
}
