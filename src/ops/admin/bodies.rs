//! The admin API's typed bodies: what a request may send (unknown keys refused) and the small
//! answers the handlers return. `/status` and `/explain` are larger views, in `ops::views`.

use crate::routing::Percent;
use crate::state::audit::AuditEntry;
use crate::state::history::SeriesView;
use crate::state::{Changed, UsersChanged};
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

/// What a list change answers: [`Applied`]'s fields, whether anything changed (`false`: no
/// id changed membership, so no new version and no audit entry), the ids that joined and
/// left, and those that were already where asked.
#[derive(Serialize)]
pub(crate) struct UsersApplied {
    pub(crate) ok: bool,
    pub(crate) changed: bool,
    pub(crate) generation: u64,
    pub(crate) version: u64,
    pub(crate) added: usize,
    pub(crate) removed: usize,
    pub(crate) already_on: usize,
    pub(crate) not_on: usize,
}

impl From<UsersChanged> for UsersApplied {
    fn from(c: UsersChanged) -> Self {
        UsersApplied {
            ok: true,
            changed: c.made,
            generation: c.changed.generation,
            version: c.changed.version,
            added: c.added,
            removed: c.removed,
            already_on: c.already_on,
            not_on: c.not_on,
        }
    }
}

/// `POST /maintenance {"on", "retry_after"}` (`retry_after`: a duration, default `5m`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaintenanceBody {
    pub(crate) on: bool,
    #[serde(default)]
    pub(crate) retry_after: Option<String>,
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
/// answer, why; whether older entries match too, and the `before` that pages to them.
#[derive(Serialize)]
pub(crate) struct Audit {
    pub(crate) source: &'static str,
    pub(crate) store_error: Option<String>,
    pub(crate) more: bool,
    pub(crate) next_before: Option<u64>,
    pub(crate) entries: Vec<AuditEntry>,
}
