//! Human-readable sizes: `"64M"`, `"1G"`, `"512KiB"`, `"4096"`.
//!
//! Walls 4 and 9 (tmpfs sizes, limits).
//!
//! Units are binary (K = 1024), as in systemd's `MemoryMax=` and bubblewrap's
//! `--size`; `B` and `iB` suffixes are accepted and mean the same.

/// Parses a size; returns a message saying what would be valid on failure.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let valid = "a size such as \"4096\", \"512K\", \"64M\" or \"1G\" (units K, M, G, T; binary)";
    if number.is_empty() {
        return Err(format!("{text:?} is not a size; valid: {valid}"));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large; valid: {valid}"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{text:?} has an unknown unit {unit:?}; valid: {valid}")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large; valid: {valid}"))
}

/// Parses a duration in whole seconds: `"30s"`, `"2m"`, `"1h"`, or `"45"`.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let valid = "a duration such as \"30s\", \"2m\" or \"1h\", or a number of seconds";
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; valid: {valid}"))?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?} has an unknown unit {unit:?}; valid: {valid}")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large; valid: {valid}"))
}

/// Formats bytes the way a profile would write them, exactly (`67108864` → `64M`).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= (1 << shift) && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_exactly() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
    }

    #[test]
    fn bad_sizes_say_what_is_valid() {
        for bad in ["", "M", "-1", "1.5G", "12 parsecs", "99999999999999999999", "20000000T"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("valid:"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_parse_to_seconds() {
        assert_eq!(parse_seconds("45"), Ok(45));
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("2m"), Ok(120));
        assert_eq!(parse_seconds("1h"), Ok(3600));
        for bad in ["", "s", "1.5s", "3 fortnights", "-1s"] {
            assert!(parse_seconds(bad).unwrap_err().contains("valid:"), "{bad}");
        }
    }

    #[test]
    fn sizes_round_trip() {
        for s in ["64M", "1G", "512K", "4097"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
    }
}
