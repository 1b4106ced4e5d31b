//! Formatting epoch milliseconds as text, without a date-time crate: the proleptic Gregorian
//! calendar in UTC is a few lines (Howard Hinnant's `civil_from_days`).

/// The formats `format_time` accepts.
pub const FORMATS: &[&str] = &["'rfc3339'", "'rfc3339_seconds'", "'date'", "'time'"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `2026-11-29T11:34:51.123Z`
    Rfc3339,
    /// `2026-11-29T11:34:51Z`
    Rfc3339Seconds,
    /// `2026-11-29`
    Date,
    /// `11:34:51`
    Time,
}

impl Format {
    pub(crate) fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "rfc3339" | "iso8601" => Some(Format::Rfc3339),
            "rfc3339_seconds" => Some(Format::Rfc3339Seconds),
            "date" => Some(Format::Date),
            "time" => Some(Format::Time),
            _ => None,
        }
    }
}

/// Accepted range: 0000-01-01 to 9999-12-31, which keeps the output four-digit years.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

pub(crate) fn format_ms(ms: i64, format: Format) -> Option<String> {
    if !(MIN_MS..=MAX_MS).contains(&ms) {
        return None;
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = wulian_common::time::civil_from_days(days);
    let (hh, mm, ss, millis) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    Some(match format {
        Format::Rfc3339 => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z"),
        Format::Rfc3339Seconds => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
        Format::Date => format!("{y:04}-{m:02}-{d:02}"),
        Format::Time => format!("{hh:02}:{mm:02}:{ss:02}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            format_ms(0, Format::Rfc3339).unwrap(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_ms(1_700_000_000_123, Format::Rfc3339).unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_ms(951_782_400_000, Format::Date).unwrap(),
            "2000-02-29"
        );
        assert_eq!(
            format_ms(-1, Format::Rfc3339Seconds).unwrap(),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(format_ms(MAX_MS, Format::Time).unwrap(), "23:59:59");
        assert_eq!(format_ms(MAX_MS + 1, Format::Date), None);
    }
}
