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
    pub percent: Percent,
}

/// `POST /rules/{rule}/users`: at least one of the two lists must name someone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsersBody {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `POST /rules/{rule}/plan/{command}` (the body may be empty).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanBody {
    /// Lets `start` lower the rule's live percentage to the plan's first step.
    #[serde(default)]
    pub allow_decrease: bool,
}

/// `POST /promote`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromoteBody {
    pub group: String,
}

/// What every change answers: the live state's generation and the control state's version.
#[derive(Serialize)]
pub(crate) struct Applied {
    pub ok: bool,
    pub generation: u64,
    pub version: u64,
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
    pub ok: bool,
    pub generation: u64,
}

/// `GET /whoami`.
#[derive(Serialize)]
pub(crate) struct WhoAmI<'a> {
    pub name: &'a str,
    pub role: &'static str,
}

/// `GET /rules/{rule}/users?user=ID`.
#[derive(Serialize)]
pub(crate) struct Membership<'a> {
    pub route: &'a str,
    pub rule: &'a str,
    pub user: &'a str,
    pub member: bool,
}

/// `GET /stats/history`.
#[derive(Serialize)]
pub(crate) struct History {
    pub bucket_seconds: u64,
    pub series: Vec<SeriesView>,
}

/// `GET /audit`: where the entries come from (`store` or `node`) and, when the store did not
/// answer, why.
#[derive(Serialize)]
pub(crate) struct Audit {
    pub source: &'static str,
    pub store_error: Option<String>,
    pub entries: Vec<AuditEntry>,
}
