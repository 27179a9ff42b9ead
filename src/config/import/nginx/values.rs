//! nginx's value syntaxes as the gateway writes them: durations (`60`, `1m30s`), sizes
//! (`10m`), rates (`10r/s`), and names made into tokens.

/// nginx's duration (`60` is seconds; `500ms`, `1m30s`, `2h`) as the gateway's (`90s`, `500ms`).
pub fn duration(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(format!("{secs}s"));
    }
    let mut ms: u64 = 0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return None,
        };
        ms += n * unit;
    }
    if !number.is_empty() {
        ms += number.parse::<u64>().ok()? * 1_000;
    }
    Some(if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    })
}

/// nginx's size (`1024`, `8k`, `10m`, `1g`) in bytes.
pub fn size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'k') => (&text[..i], 1024),
        (i, 'm') => (&text[..i], 1024 * 1024),
        (i, 'g') => (&text[..i], 1024 * 1024 * 1024),
        _ => (text.as_str(), 1),
    };
    digits.parse::<u64>().ok().map(|n| n * unit)
}

/// `10r/s` → `10/s`, `30r/m` → `30/m`.
pub fn rate(text: &str) -> Option<String> {
    let (n, unit) = text.split_once("r/")?;
    let n: u64 = n.parse().ok()?;
    matches!(unit, "s" | "m").then(|| format!("{n}/{unit}"))
}

/// A name made into an HTTP token (what group and route names must be): every other byte `-`.
pub fn token(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let t = t.trim_matches('-').to_string();
    if t.is_empty() {
        "root".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (nginx, gateway) in [
            ("60", "60s"),
            ("60s", "60s"),
            ("1m30s", "90s"),
            ("500ms", "500ms"),
            ("2h", "7200s"),
        ] {
            assert_eq!(duration(nginx).as_deref(), Some(gateway), "{nginx}");
        }
        assert_eq!(duration("soon"), None);
    }

    #[test]
    fn sizes_rates_tokens() {
        assert_eq!(size("10m"), Some(10 * 1024 * 1024));
        assert_eq!(size("8K"), Some(8192));
        assert_eq!(size("1000"), Some(1000));
        assert_eq!(size("x"), None);
        assert_eq!(rate("10r/s").as_deref(), Some("10/s"));
        assert_eq!(rate("10/s"), None);
        assert_eq!(token("/api/v2/"), "-api-v2".trim_matches('-'));
        assert_eq!(token("127.0.0.1:8080"), "127.0.0.1-8080");
    }
}
