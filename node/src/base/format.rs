//! How the node writes a moment for people: RFC 3339 in UTC.

/// Formats Unix seconds as RFC 3339 (UTC), or as the bare number when no date fits.
///
/// Takes the seconds in the type the caller holds them: `i64` in the node's records and
/// messages, `u64` in certificate times.
pub fn format_unix<S>(secs: S) -> String
where
    S: TryInto<i64> + std::fmt::Display + Copy,
{
    secs.try_into()
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_format_the_same_whatever_their_integer_type() {
        assert_eq!(format_unix(0_i64), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_767_225_600_i64), "2026-01-01T00:00:00Z");
        assert_eq!(
            format_unix(1_767_225_600_u64),
            format_unix(1_767_225_600_i64)
        );
        // Past what a date can hold: the number, said to be one.
        assert_eq!(
            format_unix(i64::MAX),
            format!("{} (Unix seconds)", i64::MAX)
        );
        assert_eq!(
            format_unix(u64::MAX),
            format!("{} (Unix seconds)", u64::MAX)
        );
    }
}
