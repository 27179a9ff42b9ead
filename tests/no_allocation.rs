//! The routing decision allocates nothing: cookie parsing, the request's facts and `decide()`
//! run under a counting global allocator and must not touch the heap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use canary_gateway::routing::UserSet;
use canary_gateway::routing::{percent_bucket, GroupId, Percent, RequestFacts, Router, Rule};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the thread under test: allocations by the test harness's other threads (its
    /// timers and output) are not the decision's.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decide_does_not_allocate() {
    let users = Arc::new(UserSet::from_ids([&b"alice"[..], b"bob"]));
    let router = Router::new(vec!["stable".into(), "canary".into()], GroupId(0)).with_rules(vec![
        Rule::header("qa", "x-canary-group"),
        Rule::users("vip", users, GroupId(0)),
        Rule::percent(
            "rollout",
            Percent::new(50.0).expect("valid"),
            b"s",
            GroupId(1),
        ),
    ]);
    let headers: &[(&str, &str)] = &[("x-other", "1")];
    let cookies: [&[u8]; 3] = [
        b"a=1; canary_user=alice",
        b"canary_user=\"zed\"; b=2",
        b"junk;;=",
    ];
    // What each cookie must get, worked out without the router: alice is on the VIP list
    // (stable), zed falls to the 50% rollout's hash, the junk cookie has no user (default).
    let share = Percent::new(50.0).expect("valid");
    let zed = if share.includes(percent_bucket(b"s", b"zed")) {
        1
    } else {
        0
    };
    let expected = [0, zed, 0];
    // Times each cookie got each group (stable, canary): an array, so counting allocates
    // nothing.
    let mut got = [[0usize; 2]; 3];
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    for _ in 0..1000 {
        for (i, cookie) in cookies.iter().enumerate() {
            let user = router.user_from_cookies([*cookie]);
            let facts = RequestFacts::new(headers).with_user(user);
            got[i][router.decide(&facts).group.0] += 1;
        }
    }
    COUNTING.with(|c| c.set(false));
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(
        after - before,
        0,
        "decide allocated {} times",
        after - before
    );
    let want = expected.map(|g| if g == 0 { [1000, 0] } else { [0, 1000] });
    assert_eq!(
        got, want,
        "each cookie's group on every one of its 1,000 decisions"
    );
}

/// Conditions (`when:`) read borrowed facts: once a pattern's matcher has warmed up on this
/// thread, header, cookie, query, client and method conditions allocate nothing.
#[test]
fn conditions_do_not_allocate() {
    use canary_gateway::routing::{Condition, RuleKind, ValueTest, When};
    let pattern = regex::bytes::Regex::new(r"^5\.").expect("pattern");
    let when = When::new(vec![
        Condition::Method(vec!["GET".into()]),
        Condition::Client(vec![]),
        Condition::Header {
            name: "x-app-version".into(),
            test: ValueTest::Matches(pattern),
        },
    ]);
    let when_open = When::new(vec![
        Condition::Method(vec!["GET".into()]),
        Condition::Header {
            name: "x-app-version".into(),
            test: ValueTest::Matches(regex::bytes::Regex::new(r"^5\.").expect("pattern")),
        },
        Condition::Cookie {
            name: "beta".into(),
            test: ValueTest::Equals(b"always"[..].into()),
        },
        Condition::Query {
            name: "region".into(),
            test: ValueTest::Present(true),
        },
    ]);
    let router = Router::new(vec!["stable".into(), "canary".into()], GroupId(0)).with_rules(vec![
        Rule::new("office", RuleKind::Match { group: GroupId(1) }).with_when(when),
        Rule::new("app", RuleKind::Match { group: GroupId(1) }).with_when(when_open),
    ]);
    let yes: &[(&str, &str)] = &[("x-app-version", "5.1"), ("cookie", "a=1; beta=always")];
    let no: &[(&str, &str)] = &[("x-app-version", "4.1"), ("cookie", "beta=always")];
    let client = Some("192.0.2.1".parse().expect("ip"));
    let decide = |headers, target: &'static [u8]| {
        let facts = RequestFacts::new(headers)
            .with_target(target)
            .with_method("GET")
            .with_client(client);
        router.decide(&facts).group.0
    };
    // The first match on this thread sets up the pattern's cache.
    assert_eq!(decide(yes, b"/?region=eu"), 1);
    let mut got = [0usize; 2];
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    for _ in 0..1000 {
        got[decide(yes, b"/?region=eu")] += 1;
        got[decide(no, b"/?region=eu")] += 1;
        got[decide(yes, b"/?other=1")] += 1;
    }
    COUNTING.with(|c| c.set(false));
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(
        after - before,
        0,
        "conditions allocated {} times",
        after - before
    );
    assert_eq!(
        got,
        [2000, 1000],
        "only the request meeting every condition is canary"
    );
}
