//! Duration strings: `500ms`, `30s`, `5m`, `1h`.

use std::time::Duration;

/// Parses a duration, or says how to write one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| duration_error(text))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(duration_error(text)),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| duration_error(text))
}

pub fn duration_error(text: &str) -> String {
    format!(
        "invalid duration `{text}`: write a whole number and a unit, as `500ms`, `30s`, `5m` or `1h`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_units() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_prose_and_bare_numbers() {
        for text in [
            "5 minutes",
            "5",
            "",
            "m",
            "1.5s",
            "-1s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
