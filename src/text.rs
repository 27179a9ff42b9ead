//! Small text writers for the request path: integers, addresses, durations, timestamps and
//! JSON strings appended to a byte buffer. `format!` and `Display` go through the formatting
//! machinery, which costs more than the work itself here (callgrind: two IPv4 addresses
//! through `to_string` took about 2,600 instructions a request; a serde_json access-log line
//! about 7,600).

use std::cell::Cell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends an address as `Display` writes it (IPv4 by hand, IPv6 through `Display`).
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends a socket address as `Display` writes it (`1.2.3.4:80`, `[::1]:80`).
pub(crate) fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => push_ip(out, IpAddr::V4(*v4.ip())),
        SocketAddr::V6(v6) => {
            out.push(b'[');
            push_ip(out, IpAddr::V6(*v6.ip()));
            out.push(b']');
        }
    }
    out.push(b':');
    push_u64(out, u64::from(addr.port()));
}

/// Appends a duration in milliseconds with three decimals (microsecond precision, rounded).
pub(crate) fn push_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    let micros = u64::try_from(micros).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    let fraction = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ]);
}

/// Appends `t` as RFC 3339 UTC with milliseconds, `2026-11-27T16:20:01.123Z`. The date and
/// time of day are formatted once per second per thread and reused.
pub(crate) fn push_rfc3339_millis(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let mut prefix = SECOND.get();
    if prefix.0 != secs {
        // "YYYY-MM-DDTHH:MM:SSZ": keep everything before the Z.
        let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
        let whole = whole.to_string();
        let mut text = [0u8; 19];
        for (slot, b) in text.iter_mut().zip(whole.bytes()) {
            *slot = b;
        }
        prefix = (secs, text);
        SECOND.set(prefix);
    }
    out.extend_from_slice(&prefix.1);
    let millis = u64::from(since_epoch.subsec_millis());
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// Appends `s` as a JSON string: quoted, with `"`, `\` and control characters escaped. Runs of
/// plain bytes are copied whole.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        plain_from = i + 1;
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn integers_match_display() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(text(|o| push_u64(o, n)), n.to_string());
        }
    }

    #[test]
    fn addresses_match_display() {
        let samples = [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.1",
        ];
        for sample in samples {
            let ip: IpAddr = sample.parse().expect("ip");
            assert_eq!(text(|o| push_ip(o, ip)), ip.to_string());
            let addr = SocketAddr::new(ip, 8080);
            assert_eq!(text(|o| push_socket_addr(o, addr)), addr.to_string());
        }
        for a in 0..=255u8 {
            let ip = IpAddr::from([a, 255 - a, a / 3, 7]);
            assert_eq!(text(|o| push_ip(o, ip)), ip.to_string());
        }
    }

    #[test]
    fn durations_in_milliseconds() {
        let cases = [
            (Duration::ZERO, "0.000"),
            (Duration::from_micros(1), "0.001"),
            (Duration::from_nanos(1_499), "0.001"),
            (Duration::from_nanos(1_500), "0.002"),
            (Duration::from_micros(12_345), "12.345"),
            (Duration::from_secs(3), "3000.000"),
        ];
        for (d, want) in cases {
            assert_eq!(text(|o| push_millis(o, d)), want, "{d:?}");
        }
    }

    #[test]
    fn timestamps_match_humantime() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for offset_ms in [0, 1, 999, 1000, 1001, 86_400_000, 86_400_123] {
            let t = base + Duration::from_millis(offset_ms);
            assert_eq!(
                text(|o| push_rfc3339_millis(o, t)),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
    }

    #[test]
    fn json_strings_round_trip() {
        let samples = [
            "",
            "plain",
            "quote\" backslash\\ end",
            "new\nline\r\ttab",
            "\u{0}\u{1f}\u{7f}",
            "ünïcödé ✓",
            "{\"x\":1}",
        ];
        for sample in samples {
            let json = text(|o| push_json_str(o, sample));
            let back: String = serde_json::from_str(&json).expect("valid JSON string");
            assert_eq!(back, sample, "{json}");
            assert!(!json.bytes().any(|b| b < 0x20), "{json}");
        }
    }
}
