//! When an ACME certificate is due to be ordered again, and which certificate read from the
//! store replaces the one served: pure rules, tested here.

use std::time::Duration;

use super::shared::CertRecord;

/// The certificate served for one name set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Served {
    pub(super) not_after: i64,
    pub(super) serial: String,
    /// When it was issued, when known (a certificate read from the folder has none).
    pub(super) issued_at: Option<i64>,
}

/// When the certificate `served` is due to be ordered again, from `now` (Unix seconds): at
/// `renew_before` before its expiry, never within `retry` of its issuance (a `renew_before`
/// longer than the CA's certificates live would otherwise order without pause), at once when
/// there is none.
pub(super) fn due_in(
    served: Option<&Served>,
    renew_before: Duration,
    retry: Duration,
    now: i64,
) -> Duration {
    let Some(served) = served else {
        return Duration::ZERO;
    };
    let renew_at = served.not_after - renew_before.as_secs() as i64;
    let earliest = served
        .issued_at
        .map_or(i64::MIN, |at| at + retry.as_secs().max(1) as i64);
    Duration::from_secs((renew_at.max(earliest) - now).max(0) as u64)
}

/// Whether a certificate read from the store replaces the one served: it is another one, not
/// expired, and does not expire before the served one (an older copy in the store, while this
/// node's newer certificate waits to be stored, is not served).
pub(super) fn replaces(current: Option<&Served>, record: &CertRecord, now: i64) -> bool {
    record.not_after > now
        && current.is_none_or(|c| c.serial != record.serial && record.not_after >= c.not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn served(not_after: i64, issued_at: Option<i64>) -> Served {
        Served {
            not_after,
            serial: "01".into(),
            issued_at,
        }
    }

    /// Due at once without a certificate; at `renew_before` before expiry; never within
    /// `retry` of issuance (a `renew_before` longer than the certificate's life).
    #[test]
    fn due_times() {
        let (now, renew, retry) = (
            1_000 * DAY,
            Duration::from_secs(30 * DAY as u64),
            Duration::from_secs(10),
        );
        assert_eq!(due_in(None, renew, retry, now), Duration::ZERO);
        let good = served(now + 90 * DAY, Some(now));
        assert_eq!(
            due_in(Some(&good), renew, retry, now),
            Duration::from_secs(60 * DAY as u64)
        );
        let near = served(now + 10 * DAY, None);
        assert_eq!(due_in(Some(&near), renew, retry, now), Duration::ZERO);
        let fresh = served(now + 10 * DAY, Some(now - 4));
        assert_eq!(
            due_in(Some(&fresh), renew, retry, now),
            Duration::from_secs(6)
        );
    }

    /// A certificate from the store replaces the served one when it is another, unexpired and
    /// not older; the same one, an expired one or an older one does not.
    #[test]
    fn store_certificates_replace_only_newer_ones() {
        let now = 1_000 * DAY;
        let record = |serial: &str, not_after: i64| CertRecord {
            names: vec!["a.test".into()],
            chain: String::new(),
            key: String::new(),
            not_after,
            serial: serial.into(),
            issued_at: now,
        };
        let current = served(now + 50 * DAY, None);
        assert!(replaces(None, &record("02", now + DAY), now));
        assert!(!replaces(None, &record("02", now - 1), now));
        assert!(replaces(Some(&current), &record("02", now + 90 * DAY), now));
        assert!(!replaces(
            Some(&current),
            &record("01", now + 90 * DAY),
            now
        ));
        assert!(!replaces(
            Some(&current),
            &record("02", now + 20 * DAY),
            now
        ));
    }
}
