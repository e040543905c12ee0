//! Kubernetes resource quantities ("500m", "1.5", "128Mi", "1e3") as exact integers.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

/// The value in thousandths, rounded up, as `Quantity.MilliValue()` does.
pub fn milli_value(quantity: &Quantity) -> Result<i128, QuantityError> {
    scaled_ceil(&quantity.0, 1000)
}

/// The value in units, rounded up, as `Quantity.Value()` does.
pub fn value(quantity: &Quantity) -> Result<i128, QuantityError> {
    scaled_ceil(&quantity.0, 1)
}

/// `text * scale`, rounded up, computed as a fraction so that no precision is lost.
fn scaled_ceil(text: &str, scale: i128) -> Result<i128, QuantityError> {
    let bad = || QuantityError(text.to_string());
    let trimmed = text.trim();
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let number_end = unsigned.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    if number.is_empty() || number == "." {
        return Err(bad());
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{whole}{fraction}");
    let mantissa: i128 = digits.parse().map_err(|_| bad())?;
    let mut numerator = mantissa.checked_mul(scale).ok_or_else(bad)?;
    let mut denominator: i128 = 10i128.checked_pow(fraction.len() as u32).ok_or_else(bad)?;
    let (multiplier, divisor) = suffix_factor(suffix).ok_or_else(bad)?;
    numerator = numerator.checked_mul(multiplier).ok_or_else(bad)?;
    denominator = denominator.checked_mul(divisor).ok_or_else(bad)?;
    let ceil = (numerator + denominator - 1) / denominator;
    Ok(if negative { -(numerator / denominator) } else { ceil })
}

/// (multiplier, divisor) of a suffix.
fn suffix_factor(suffix: &str) -> Option<(i128, i128)> {
    let binary = |power: u32| Some((1024i128.pow(power), 1));
    let decimal = |exponent: i32| {
        if exponent >= 0 {
            Some((10i128.pow(exponent as u32), 1))
        } else {
            Some((1, 10i128.pow(exponent.unsigned_abs())))
        }
    };
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            let value: i32 = exponent[1..].parse().ok()?;
            if value.abs() > 30 {
                return None;
            }
            decimal(value)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity(text.to_string())
    }

    #[test]
    fn cpu_quantities_in_milli() {
        assert_eq!(milli_value(&q("500m")), Ok(500));
        assert_eq!(milli_value(&q("1")), Ok(1000));
        assert_eq!(milli_value(&q("0.25")), Ok(250));
        assert_eq!(milli_value(&q("2.5")), Ok(2500));
        assert_eq!(milli_value(&q("1e3")), Ok(1_000_000));
        assert_eq!(milli_value(&q("100u")), Ok(1), "rounded up");
    }

    #[test]
    fn memory_quantities_in_bytes() {
        assert_eq!(value(&q("128Mi")), Ok(128 * 1024 * 1024));
        assert_eq!(value(&q("1G")), Ok(1_000_000_000));
        assert_eq!(value(&q("1.5Gi")), Ok(1536 * 1024 * 1024));
        assert_eq!(value(&q("64k")), Ok(64_000));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(value(&q("")).is_err());
        assert!(value(&q("12XB")).is_err());
        assert!(value(&q("abc")).is_err());
    }
}
