//! The plan state machine, table-tested: every event in every state, one row each.

use super::*;

use PlanStatus::{Completed, Held, Paused, RolledBack, Running};

/// The states a plan can be in, in the order of each row's results.
const STATES: [Option<PlanStatus>; 6] = [
    None,
    Some(Running),
    Some(Paused),
    Some(Held),
    Some(RolledBack),
    Some(Completed),
];

/// A row's result in one state: the status after the event, or refused (409).
#[derive(Debug, Clone, Copy, PartialEq)]
enum To {
    S(Option<PlanStatus>),
    Refused,
}

use To::Refused;
const NOT_STARTED: To = To::S(None);
const RUNNING: To = To::S(Some(Running));
const PAUSED: To = To::S(Some(Paused));
const HELD: To = To::S(Some(Held));
const ROLLED_BACK: To = To::S(Some(RolledBack));
const COMPLETED: To = To::S(Some(Completed));

fn run(status: Option<PlanStatus>, event: PlanEvent, overridden: bool) -> To {
    match transition(status, event, overridden) {
        Ok(next) => To::S(next),
        Err(_) => Refused,
    }
}

/// Each action (as the API or the plan names it) × each state: not started, running, paused,
/// held, rolled back, completed. Rollback and promote are both an override of the route (or of
/// every route); resuming the rules (of the route or everywhere) releases held plans.
#[test]
fn every_event_in_every_state() {
    use PlanCommand::*;
    use PlanEvent::*;
    #[rustfmt::skip]
    let table: [(&str, PlanEvent, bool, [To; 6]); 15] = [
        //  action                         event                     overridden   none         running      paused       held         rolled_back  completed
        ("start",                          Command(Start),           false, [RUNNING,     Refused,     Refused,     Refused,     RUNNING,     RUNNING]),
        ("start under an override",        Command(Start),           true,  [Refused,     Refused,     Refused,     Refused,     Refused,     Refused]),
        ("pause",                          Command(Pause),           false, [Refused,     PAUSED,      Refused,     PAUSED,      Refused,     Refused]),
        ("pause under an override",        Command(Pause),           true,  [Refused,     PAUSED,      Refused,     PAUSED,      Refused,     Refused]),
        ("resume (the plan)",              Command(Resume),          false, [Refused,     Refused,     RUNNING,     Refused,     Refused,     Refused]),
        ("resume (the plan) under an override", Command(Resume),     true,  [Refused,     Refused,     Refused,     Refused,     Refused,     Refused]),
        ("abort",                          Command(Abort),           false, [Refused,     ROLLED_BACK, ROLLED_BACK, ROLLED_BACK, Refused,     Refused]),
        ("abort under an override",        Command(Abort),           true,  [Refused,     ROLLED_BACK, ROLLED_BACK, ROLLED_BACK, Refused,     Refused]),
        ("verdict: pass (advance)",        Pass { last: false },     false, [Refused,     RUNNING,     Refused,     Refused,     Refused,     Refused]),
        ("verdict: pass at the last step", Pass { last: true },      false, [Refused,     COMPLETED,   Refused,     Refused,     Refused,     Refused]),
        ("verdict: fail, on_failure rollback", Fail(OnFailure::Rollback), false, [Refused, ROLLED_BACK, Refused,   Refused,     Refused,     Refused]),
        ("verdict: fail, on_failure pause", Fail(OnFailure::Pause),  false, [Refused,     PAUSED,      Refused,     Refused,     Refused,     Refused]),
        ("rollback (route or everywhere)", Override,                 true,  [NOT_STARTED, HELD,        PAUSED,      HELD,        ROLLED_BACK, COMPLETED]),
        ("promote (route or everywhere)",  Override,                 true,  [NOT_STARTED, HELD,        PAUSED,      HELD,        ROLLED_BACK, COMPLETED]),
        ("resume the rules (route or everywhere)", Release,          false, [NOT_STARTED, RUNNING,     PAUSED,      RUNNING,     ROLLED_BACK, COMPLETED]),
    ];
    for (action, event, overridden, results) in table {
        for (state, want) in STATES.iter().zip(results) {
            assert_eq!(
                run(*state, event, overridden),
                want,
                "{action} when {}",
                state.map_or("not started", PlanStatus::as_str)
            );
        }
    }
}

/// A refusal says why, in words the API answers with.
#[test]
fn refusals_say_why() {
    let held = transition(Some(Held), PlanEvent::Command(PlanCommand::Resume), true);
    assert!(held.unwrap_err().contains("POST /resume"));
    let under = transition(None, PlanEvent::Command(PlanCommand::Start), true);
    assert!(under.unwrap_err().contains("rollback or promote"));
    let paused = transition(Some(Paused), PlanEvent::Command(PlanCommand::Pause), false);
    assert_eq!(paused.unwrap_err(), "it is paused: it cannot pause");
}

#[test]
fn commands_parse_by_name() {
    use PlanCommand::*;
    for command in [Start, Pause, Resume, Abort] {
        assert_eq!(PlanCommand::parse(command.as_str()), Some(command));
    }
    assert_eq!(PlanCommand::parse("go"), None);
    assert!(Held.is_active() && Paused.is_active() && !Completed.is_active());
}
