//! The state of one translation while it walks the nginx tree: what has been built so far
//! (groups, listeners, routes, limits), where each part came from, and the report. The
//! `server` and `location` steps add to it (`impl Walk` in their own files).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::edge::{Level, Zone};
use super::report::Report;
use super::syntax::Pos;
use crate::config::spec::{CertificateSpec, GroupSpec, LimitsSpec, RouteSpec};

/// Where each part of the written spec came from, for the comments in the file.
#[derive(Debug, Default)]
pub struct Origins {
    pub listen: Vec<Vec<Pos>>,
    pub groups: BTreeMap<String, Vec<Pos>>,
    /// Each route's location, and a note for the comment (nginx's default server).
    pub routes: Vec<(Pos, Option<String>)>,
    /// Gateway-wide keys (`limits`, `compress`, …) and the directives they came from.
    pub keys: BTreeMap<&'static str, Vec<Pos>>,
}

/// A listener being gathered from the servers that listen on its address.
pub(super) struct Listener {
    pub(super) addr: String,
    pub(super) ssl: bool,
    pub(super) http2: bool,
    pub(super) certificates: Vec<CertificateSpec>,
    pub(super) min_version: Option<String>,
    pub(super) redirect_to: Option<u16>,
    pub(super) proxies: bool,
    pub(super) at: Vec<Pos>,
}

pub(super) struct Walk<'t> {
    pub(super) prefix: &'t Path,
    pub(super) report: Report,
    pub(super) groups: BTreeMap<String, GroupSpec>,
    pub(super) origins: Origins,
    /// nginx upstream name → the gateway group.
    pub(super) upstreams: HashMap<String, String>,
    pub(super) zones: HashMap<String, Zone>,
    pub(super) listeners: Vec<Listener>,
    pub(super) routes: Vec<RouteSpec>,
    pub(super) limits: LimitsSpec,
    /// The group timeouts and host headers the routes ask of each group.
    pub(super) group_settings: HashMap<String, Vec<(Level, Pos)>>,
    /// Whether a route without `hosts` (nginx's default server) has been written.
    pub(super) catch_all_taken: bool,
    /// The server names of the default server, whose routes take every host.
    pub(super) default_names: Vec<String>,
    pub(super) https_port: Option<u16>,
}
