//! Kubernetes resource quantities: parsing the few forms a user writes on the command line
//! (`100m`, `2`, `256Mi`, `1G`) and printing the canonical forms the API server would print,
//! so the Node we post reads exactly like one a kubelet posts (`8148064Ki`, `1500m`).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("invalid quantity {0:?}")]
    Invalid(String),
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
}

const BINARY_SUFFIXES: [(&str, u32); 6] = [("Ki", 1), ("Mi", 2), ("Gi", 3), ("Ti", 4), ("Pi", 5), ("Ei", 6)];
const DECIMAL_SUFFIXES: [(&str, u32); 6] = [("k", 1), ("M", 2), ("G", 3), ("T", 4), ("P", 5), ("E", 6)];

/// Parse a quantity into thousandths of its unit (so `100m` -> 100, `2` -> 2000,
/// `1Ki` -> 1_024_000). Fractions finer than a thousandth round up, as the API server does.
pub fn parse_millis(text: &str) -> Result<u128, QuantityError> {
    let invalid = || QuantityError::Invalid(text.to_string());
    let text_trimmed = text.trim();
    let split = text_trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text_trimmed.len());
    let (number, suffix) = text_trimmed.split_at(split);
    if number.is_empty() || number == "." {
        return Err(invalid());
    }
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if fraction.contains('.') {
        return Err(invalid());
    }
    // Work in units of 10^-9 of the unit to keep fractions exact.
    let whole_value: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
    let mut nanos: u128 =
        whole_value.checked_mul(1_000_000_000).ok_or_else(|| QuantityError::OutOfRange(text.to_string()))?;
    for (position, digit) in fraction.chars().take(9).enumerate() {
        let digit = u128::from(digit.to_digit(10).ok_or_else(invalid)?);
        nanos += digit * 10u128.pow(8 - position as u32);
    }
    let overflow = || QuantityError::OutOfRange(text.to_string());
    let scaled_nanos = if suffix.is_empty() {
        nanos
    } else if suffix == "m" {
        nanos.div_ceil(1000)
    } else if let Some((_, power)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        nanos.checked_mul(1024u128.pow(*power)).ok_or_else(overflow)?
    } else if let Some((_, power)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        nanos.checked_mul(1000u128.pow(*power)).ok_or_else(overflow)?
    } else {
        return Err(invalid());
    };
    Ok(scaled_nanos.div_ceil(1_000_000))
}

/// Parse a quantity of whole units (bytes, pods), rounding any fraction up.
pub fn parse_units(text: &str) -> Result<u64, QuantityError> {
    let millis = parse_millis(text)?;
    u64::try_from(millis.div_ceil(1000)).map_err(|_| QuantityError::OutOfRange(text.to_string()))
}

/// Canonical binary-SI form of a byte count, as the API server prints `resource.BinarySI`:
/// the largest power-of-1024 suffix that divides the value exactly (`8148064Ki`, `100Mi`, `0`).
pub fn format_binary(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    let mut value = bytes;
    let mut suffix = "";
    for (name, _) in BINARY_SUFFIXES {
        if !value.is_multiple_of(1024) {
            break;
        }
        value /= 1024;
        suffix = name;
    }
    format!("{value}{suffix}")
}

/// Canonical decimal-SI form of a CPU amount given in millicores (`2`, `1500m`).
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_forms() {
        assert_eq!(parse_millis("100m"), Ok(100));
        assert_eq!(parse_millis("2"), Ok(2000));
        assert_eq!(parse_millis("0.5"), Ok(500));
        assert_eq!(parse_units("1Ki"), Ok(1024));
        assert_eq!(parse_units("256Mi"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_units("1G"), Ok(1_000_000_000));
        assert_eq!(parse_units("1.5Gi"), Ok(1536 * 1024 * 1024));
        assert_eq!(parse_units("110"), Ok(110));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_millis("").is_err());
        assert!(parse_millis("abc").is_err());
        assert!(parse_millis("1.2.3").is_err());
        assert!(parse_millis("5Xi").is_err());
        assert!(parse_millis("-1").is_err());
    }

    #[test]
    fn formats_like_the_api_server() {
        assert_eq!(format_binary(0), "0");
        assert_eq!(format_binary(1000), "1000");
        assert_eq!(format_binary(8_343_617_536), "8148064Ki");
        assert_eq!(format_binary(100 * 1024 * 1024), "100Mi");
        assert_eq!(format_binary(2 * 1024 * 1024 * 1024), "2Gi");
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_cpu_millis(1500), "1500m");
    }
}
