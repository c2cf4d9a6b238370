//! Durations as `xsd:duration` writes them (`P30D`, `PT12H`), and in words for
//! messages.

use std::time::Duration;

/// Parses an ISO 8601 duration as used by `xsd:duration` in ODRL: `P30D`, `PT12H`,
/// `P1DT2H30M`, `P2W`, `PT90S`. Years and months are refused (they have no fixed
/// length) and so are fractions.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("duration `{s}` {why}; write it like P30D, PT12H or P1DT2H30M");
    let rest = s
        .strip_prefix('P')
        .ok_or_else(|| bad("does not start with P"))?;
    if rest.is_empty() {
        return Err(bad("is empty"));
    }
    let mut secs: u64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    let mut seen_unit = false;
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' if !in_time && number.is_empty() => in_time = true,
            'W' | 'D' | 'H' | 'M' | 'S' | 'Y' => {
                if number.is_empty() {
                    return Err(bad("has a unit without a number"));
                }
                let n: u64 = number.parse().map_err(|_| bad("has a number too large"))?;
                number.clear();
                let unit = match (in_time, c) {
                    (false, 'W') => 7 * 86_400,
                    (false, 'D') => 86_400,
                    (true, 'H') => 3_600,
                    (true, 'M') => 60,
                    (true, 'S') => 1,
                    (false, 'Y') | (false, 'M') => {
                        return Err(bad("uses years or months, which have no fixed length"));
                    }
                    _ => return Err(bad("puts a unit on the wrong side of T")),
                };
                secs = n
                    .checked_mul(unit)
                    .and_then(|v| secs.checked_add(v))
                    .ok_or_else(|| bad("is too long"))?;
                seen_unit = true;
            }
            '.' | ',' => return Err(bad("has a fraction; use whole seconds")),
            _ => return Err(bad(&format!("has an unexpected character `{c}`"))),
        }
    }
    if !number.is_empty() || !seen_unit {
        return Err(bad("ends without a unit"));
    }
    Ok(Duration::from_secs(secs))
}

/// Writes a duration in the canonical form read by [`parse_duration`]
/// (whole seconds: `P30D`, `PT1H30M`, `PT0S`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "PT0S".to_owned();
    }
    let days = secs / 86_400;
    secs %= 86_400;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if h + m + s > 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 {
            out.push_str(&format!("{s}S"));
        }
    }
    out
}

/// Reads a human duration for messages: "30 days", "2 hours 5 minutes".
pub(crate) fn describe_duration(secs: u64) -> String {
    if secs == 0 {
        return "no time".to_owned();
    }
    let parts = [
        (secs / 86_400, "day"),
        (secs % 86_400 / 3600, "hour"),
        (secs % 3600 / 60, "minute"),
        (secs % 60, "second"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n} {u}{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (s, secs) in [
            ("P30D", 30 * 86_400),
            ("PT12H", 12 * 3600),
            ("P1DT2H30M", 86_400 + 2 * 3600 + 1800),
            ("PT90S", 90),
            ("P2W", 14 * 86_400),
            ("PT0S", 0),
        ] {
            assert_eq!(parse_duration(s).unwrap().as_secs(), secs, "{s}");
            let back = format_duration(Duration::from_secs(secs));
            assert_eq!(parse_duration(&back).unwrap().as_secs(), secs);
        }
        for bad in ["30D", "P", "P1Y", "P1M", "PT1.5S", "P1H", "PTD", "P3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(describe_duration(90_061), "1 day 1 hour 1 minute 1 second");
    }
}
