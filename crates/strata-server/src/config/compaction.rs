//! `--auto-compaction-mode` and `--auto-compaction-retention`, read as etcd 3.4 reads them.

use std::time::Duration;

use super::ConfigError;

/// `--auto-compaction-mode`: how `--auto-compaction-retention` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AutoCompactionMode {
    /// Keep a period of history: the retention is a duration.
    Periodic,
    /// Keep a number of revisions: the retention is a count.
    Revision,
}

impl AutoCompactionMode {
    fn as_str(self) -> &'static str {
        match self {
            AutoCompactionMode::Periodic => "periodic",
            AutoCompactionMode::Revision => "revision",
        }
    }
}

/// What the server compacts on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Nothing (retention 0, etcd's default).
    Off,
    /// Keep this much history: compact what is older.
    Periodic(Duration),
    /// Keep this many revisions: compact below `current - n`.
    Revision(u64),
}

const NANOS_PER_HOUR: u128 = 3_600 * 1_000_000_000;

/// Reads a retention as etcd 3.4's `parseCompactionRetention`: a bare non-negative integer is
/// hours in periodic mode and a revision count in revision mode; otherwise periodic mode takes
/// a Go duration (`"30m"`, `"1h30m"`, `"1.5h"`). Stricter than etcd in one way: revision mode
/// refuses a duration, which etcd would silently read as a count of nanoseconds.
pub(crate) fn parse_auto_compaction(
    mode: AutoCompactionMode,
    retention: &str,
) -> Result<AutoCompaction, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidCompactionRetention {
        mode: mode.as_str(),
        value: retention.to_owned(),
        reason,
    };
    let trimmed = retention.trim();
    if let Ok(count) = trimmed.parse::<u64>() {
        return Ok(match (mode, count) {
            (_, 0) => AutoCompaction::Off,
            (AutoCompactionMode::Revision, n) => AutoCompaction::Revision(n),
            (AutoCompactionMode::Periodic, hours) => {
                let nanos = u128::from(hours) * NANOS_PER_HOUR;
                AutoCompaction::Periodic(
                    duration_from_nanos(nanos).ok_or_else(|| invalid("too long".to_owned()))?,
                )
            }
        });
    }
    if mode == AutoCompactionMode::Revision {
        return Err(invalid(
            "revision mode takes a whole number of revisions".to_owned(),
        ));
    }
    let nanos = parse_go_duration_nanos(trimmed).map_err(invalid)?;
    if nanos < 0 {
        return Err(invalid("a retention cannot be negative".to_owned()));
    }
    if nanos == 0 {
        return Ok(AutoCompaction::Off);
    }
    let period =
        duration_from_nanos(nanos.unsigned_abs()).ok_or_else(|| invalid("too long".to_owned()))?;
    Ok(AutoCompaction::Periodic(period))
}

fn duration_from_nanos(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

/// `text`, `--flag`'s value, as a Go duration of at least `least` (`Duration::ZERO`: any that
/// is not negative).
///
/// # Errors
///
/// [`ConfigError::InvalidDuration`]: not a Go duration, negative, or below `least`.
pub(crate) fn go_duration_at_least(
    flag: &'static str,
    text: &str,
    least: std::time::Duration,
) -> Result<std::time::Duration, super::ConfigError> {
    let invalid = |reason: String| super::ConfigError::InvalidDuration {
        flag,
        value: text.to_owned(),
        reason,
    };
    let nanos = parse_go_duration_nanos(text).map_err(invalid)?;
    let duration = u64::try_from(nanos)
        .map(std::time::Duration::from_nanos)
        .map_err(|_| invalid("negative".to_owned()))?;
    if duration < least {
        return Err(invalid(format!("must be at least {least:?}")));
    }
    Ok(duration)
}

/// Go's `time.ParseDuration`: an optional sign, then one or more decimal numbers (with an
/// optional fraction) each followed by a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`);
/// `"0"` alone needs no unit. Go's limit applies: at most `i64::MAX` nanoseconds (~292 years).
/// Returns nanoseconds or Go's reason for refusing.
pub(crate) fn parse_go_duration_nanos(text: &str) -> Result<i128, String> {
    let quoted = || format!("{text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!("invalid duration {}", quoted()));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(format!("invalid duration {}", quoted()));
        }
        let unit_len = after_number
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_number.len(), |(i, _)| i);
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => NANOS_PER_HOUR,
            "" => return Err(format!("missing unit in duration {}", quoted())),
            other => return Err(format!("unknown unit {other:?} in duration {}", quoted())),
        };
        let overflow = || format!("invalid duration {}", quoted());
        // Digits past 30 cannot change a value that must fit in i64 nanoseconds, except to
        // overflow, which the integer part already reports.
        let int_value: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| overflow())?
        };
        let mut value = int_value.checked_mul(unit_nanos).ok_or_else(overflow)?;
        let frac_kept = &frac_digits[..frac_digits.len().min(30)];
        if !frac_kept.is_empty() {
            let frac_value: u128 = frac_kept.parse().map_err(|_| overflow())?;
            let scale = 10u128.pow(u32::try_from(frac_kept.len()).map_err(|_| overflow())?);
            // The fraction times the unit, truncated toward zero as Go does.
            value += frac_value.checked_mul(unit_nanos).ok_or_else(overflow)? / scale;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        if total > i64::MAX as u128 {
            return Err(overflow());
        }
        rest = after_unit;
    }
    let magnitude = i128::try_from(total).map_err(|_| format!("invalid duration {}", quoted()))?;
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        for (text, nanos) in [
            ("0", 0_i128),
            ("1h", 3_600_000_000_000),
            ("30m", 1_800_000_000_000),
            ("90s", 90_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5h", 5_400_000_000_000),
            (".5s", 500_000_000),
            ("2.s", 2_000_000_000),
            ("300ms", 300_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("7ns", 7),
            ("-1h", -3_600_000_000_000),
            ("+5m", 300_000_000_000),
            ("2562047h47m16.854775807s", i64::MAX as i128),
        ] {
            assert_eq!(parse_go_duration_nanos(text), Ok(nanos), "{text}");
        }
    }

    #[test]
    fn go_durations_refuse_what_go_refuses() {
        for (text, reason) in [
            ("", "invalid duration"),
            ("-", "invalid duration"),
            ("1", "missing unit"),
            ("1.5", "missing unit"),
            ("1x", "unknown unit"),
            ("h", "invalid duration"),
            (".s", "invalid duration"),
            ("1h-1m", "unknown unit"),
            ("2562048h", "invalid duration"),
            (
                "99999999999999999999999999999999999999999h",
                "invalid duration",
            ),
        ] {
            let err = parse_go_duration_nanos(text).expect_err(text);
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn retention_is_hours_or_a_duration_in_periodic_mode_and_a_count_in_revision_mode() {
        let periodic = |s| parse_auto_compaction(AutoCompactionMode::Periodic, s);
        let revision = |s| parse_auto_compaction(AutoCompactionMode::Revision, s);
        assert_eq!(periodic("0").ok(), Some(AutoCompaction::Off));
        assert_eq!(periodic("0s").ok(), Some(AutoCompaction::Off));
        assert_eq!(
            periodic("2").ok(),
            Some(AutoCompaction::Periodic(Duration::from_secs(7_200)))
        );
        assert_eq!(
            periodic("1h").ok(),
            Some(AutoCompaction::Periodic(Duration::from_secs(3_600)))
        );
        assert_eq!(
            periodic("30m").ok(),
            Some(AutoCompaction::Periodic(Duration::from_secs(1_800)))
        );
        assert_eq!(
            periodic("90s").ok(),
            Some(AutoCompaction::Periodic(Duration::from_secs(90)))
        );
        assert_eq!(revision("0").ok(), Some(AutoCompaction::Off));
        assert_eq!(revision("1000").ok(), Some(AutoCompaction::Revision(1_000)));
        for bad in ["foo", "-1", "1.5", "-1h"] {
            let err = periodic(bad).expect_err(bad).to_string();
            assert!(
                err.contains("--auto-compaction-retention") && err.contains(bad),
                "{err}"
            );
        }
        for bad in ["1h", "-1", "x"] {
            let err = revision(bad).expect_err(bad).to_string();
            assert!(err.contains("--auto-compaction-mode revision"), "{err}");
        }
    }
}
