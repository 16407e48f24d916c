//! Durations and sizes as people write them in configuration: `14d`, `1h30m`, `500ms`,
//! `2w`; `512MiB`, `1GB`, `100k`.

use std::time::Duration;

/// Parses a duration: one or more `<number><unit>` parts, unit one of `ms`, `s`, `m`/`min`,
/// `h`, `d`, `w`, `M` (30 days), `y` (365 days) (`1h30m`, `14d`, `500ms`). A bare `0` is
/// zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = |why: &str| {
        format!("`{t}` is not a duration ({why}); write e.g. 14d, 12h, 30m, 45s, 500ms, 1h30m")
    };
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("a number must come first"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs: u64 = match unit {
            "ms" => {
                total += Duration::from_millis(n);
                continue;
            }
            "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            // Sigma's `timespan` units.
            "M" => 30 * 86_400,
            "y" => 365 * 86_400,
            "" => return Err(bad("a unit is missing")),
            _ => return Err(bad(&format!("unknown unit `{unit}`"))),
        };
        let part = n.checked_mul(secs).ok_or_else(|| bad("too long"))?;
        total = total
            .checked_add(Duration::from_secs(part))
            .ok_or_else(|| bad("too long"))?;
    }
    Ok(total)
}

/// Parses a size in bytes: a number with an optional unit `B`, `k`/`KB` (1000), `KiB`
/// (1024), `M`/`MB`, `MiB`, `G`/`GB`, `GiB`, `T`/`TB`, `TiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = |why: &str| format!("`{t}` is not a size ({why}); write e.g. 512MiB, 1GB, 100000");
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad("a number must come first"));
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad("number too large"))?;
    let mult: u64 = match t[digits..].trim() {
        "" | "B" | "b" => 1,
        "k" | "K" | "KB" | "kB" => 1000,
        "KiB" | "Ki" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "MiB" | "Mi" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "GiB" | "Gi" => 1 << 30,
        "T" | "TB" => 1_000_000_000_000,
        "TiB" | "Ti" => 1 << 40,
        u => return Err(bad(&format!("unknown unit `{u}`"))),
    };
    n.checked_mul(mult).ok_or_else(|| bad("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_duration(" 45s ").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "d", "14", "14x", "1h30", "99999999999999999999d", "-1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(
            parse_duration("14q")
                .unwrap_err()
                .contains("unknown unit `q`")
        );
        // Sigma's timespans: months and years.
        assert_eq!(
            parse_duration("1M").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            parse_duration("1y").unwrap(),
            Duration::from_secs(365 * 86_400)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("100000").unwrap(), 100_000);
        assert_eq!(parse_size("2 GiB").unwrap(), 2 << 30);
        for bad in ["", "MB", "1XB", "99999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
