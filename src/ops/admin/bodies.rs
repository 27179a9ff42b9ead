//! The admin API's typed bodies: what a request may send (unknown keys refused) and the small
//! answers the handlers return. `/status` and `/explain` are larger views, in `ops::views`.

use crate::routing::Percent;
use crate::state::audit::AuditEntry;
use crate::state::history::SeriesView;
use crate::state::Changed;
use serde::{Deserialize, Serialize};

/// `PUT /rules/{rule}/percent`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PercentBody {
    pub(crate) percent: Percent,
}

/// `POST /rules/{rule}/users`: at least one of the two lists must name someone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsersBody {
    #[serde(default)]
    pub(crate) add: Vec<String>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

/// `POST /rules/{rule}/plan/{command}` (the body may be empty).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanBody {
    /// Lets `start` lower the rule's live percentage to the plan's first step.
    #[serde(default)]
    pub(crate) allow_decrease: bool,
}

/// `POST /promote`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromoteBody {
    pub(crate) group: String,
}

/// What every change answers: the live state's generation and the control state's version.
#[derive(Serialize)]
pub(crate) struct Applied {
    pub(crate) ok: bool,
    pub(crate) generation: u64,
    pub(crate) version: u64,
}

impl From<Changed> for Applied {
    fn from(c: Changed) -> Self {
        Applied {
            ok: true,
            generation: c.generation,
            version: c.version,
        }
    }
}

/// `POST /reload`.
#[derive(Serialize)]
pub(crate) struct Reloaded {
    pub(crate) ok: bool,
    pub(crate) generation: u64,
}

/// `GET /whoami`.
#[derive(Serialize)]
pub(crate) struct WhoAmI<'a> {
    pub(crate) name: &'a str,
    pub(crate) role: &'static str,
}

/// `GET /rules/{rule}/users?user=ID`.
#[derive(Serialize)]
pub(crate) struct Membership<'a> {
    pub(crate) route: &'a str,
    pub(crate) rule: &'a str,
    pub(crate) user: &'a str,
    pub(crate) member: bool,
}

/// `GET /stats/history`.
#[derive(Serialize)]
pub(crate) struct History {
    pub(crate) bucket_seconds: u64,
    pub(crate) series: Vec<SeriesView>,
}

/// `GET /audit`: where the entries come from (`store` or `node`) and, when the store did not
/// answer, why.
#[derive(Serialize)]
pub(crate) struct Audit {
    pub(crate) source: &'static str,
    pub(crate) store_error: Option<String>,
    pub(crate) entries: Vec<AuditEntry>,
}
