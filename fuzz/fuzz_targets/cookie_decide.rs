//! Fuzzes cookie parsing (plain and signed) and `decide()` with arbitrary Cookie and QA header
//! bytes: no panic, and every decision names a group that exists.
#![no_main]

use std::sync::{Arc, OnceLock};

use canary_gateway::routing::{GroupId, Percent, RequestFacts, Router, Rule, RuleKind};
use canary_gateway::routing::UserSet;
use libfuzzer_sys::fuzz_target;

fn routers() -> &'static [Router; 2] {
    static ROUTERS: OnceLock<[Router; 2]> = OnceLock::new();
    ROUTERS.get_or_init(|| {
        let users = Arc::new(UserSet::from_ids([&b"alice"[..], b"bob", b"a.b"]));
        let plain = Router::new(
            vec!["stable".into(), "canary".into(), "beta".into()],
            GroupId(0),
        )
        .with_rules(vec![
            Rule::header("qa", "x-canary-group"),
            Rule::new(
                "qa-secret",
                RuleKind::Header {
                    header: "x-qa".into(),
                    secret: Some(b"sekrit-value"[..].into()),
                    from: Vec::new(),
                },
            ),
            Rule::users("vip", users, GroupId(2)),
            Rule::percent(
                "rollout",
                Percent::new(33.3).unwrap_or_default(),
                b"fuzz",
                GroupId(1),
            ),
        ]);
        let signed = plain
            .clone()
            .with_signing_keys(vec![b"fuzzing-key-0123456789"[..].into()]);
        [plain, signed]
    })
}

fuzz_target!(|data: &[u8]| {
    // Split the input into up to three Cookie header lines and a QA header value.
    let mut parts = data.splitn(4, |&b| b == 0xff);
    let cookies: Vec<&[u8]> = (0..3).filter_map(|_| parts.next()).collect();
    let qa = parts.next().unwrap_or_default();
    let qa_text = String::from_utf8_lossy(qa);
    let headers = [("x-canary-group", qa_text.as_ref()), ("x-qa", qa_text.as_ref())];
    for router in routers() {
        let user = router.user_from_cookies(cookies.iter().copied());
        if let Some(id) = user {
            assert!(canary_gateway::routing::is_valid_user_id(id));
        }
        let decision = router.decide(&RequestFacts::new(&headers[..]).with_user(user));
        assert!(decision.group.0 < router.group_names().len());
        let _ = router.rule_name(&decision);
    }
});
