//! Fuzzes cookie parsing (plain and signed) and `decide()` with arbitrary Cookie and QA header
//! bytes: no panic, and every decision names a group that exists.
#![no_main]

use std::sync::{Arc, OnceLock};

use canary_gateway::routing::{GroupId, Matcher, Mode, Percent, Router, Rule};
use canary_gateway::routing::UserSet;
use libfuzzer_sys::fuzz_target;

fn routers() -> &'static [Router; 2] {
    static ROUTERS: OnceLock<[Router; 2]> = OnceLock::new();
    ROUTERS.get_or_init(|| {
        let users = Arc::new(UserSet::from_ids([&b"alice"[..], b"bob", b"a.b"]));
        let plain = Router {
            group_names: vec!["stable".into(), "canary".into(), "beta".into()],
            cookie: "canary_user".into(),
            default_group: GroupId(0),
            rules: vec![
                Rule {
                    name: "qa".into(),
                    matcher: Matcher::Header {
                        name: "x-canary-group".into(),
                        secret: None,
                        from: Vec::new(),
                    },
                    group: GroupId(0),
                },
                Rule {
                    name: "qa-secret".into(),
                    matcher: Matcher::Header {
                        name: "x-qa".into(),
                        secret: Some(b"sekrit-value"[..].into()),
                        from: Vec::new(),
                    },
                    group: GroupId(0),
                },
                Rule {
                    name: "vip".into(),
                    matcher: Matcher::Users { users },
                    group: GroupId(2),
                },
                Rule {
                    name: "rollout".into(),
                    matcher: Matcher::Percent {
                        share: Percent::new(33.3).unwrap_or_default(),
                        seed: b"fuzz"[..].into(),
                    },
                    group: GroupId(1),
                },
            ],
            mode: Mode::Rules,
            signing_keys: Vec::new(),
        };
        let mut signed = plain.clone();
        signed.signing_keys = vec![b"fuzzing-key-0123456789"[..].into()];
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
        let decision = router.decide(user, &headers[..]);
        assert!(decision.group.0 < router.group_names.len());
        let _ = router.rule_name(&decision);
    }
});
