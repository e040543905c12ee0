//! A token bucket in elapsed time (the caller passes how long since the last look), as
//! client-go's rate limiters: `burst` tokens, refilled at `per_second`.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: f64, per_second: f64) -> TokenBucket {
        TokenBucket { tokens: burst, burst, per_second }
    }

    /// Refill for `elapsed`, then take a token; when there is none, how long until there is.
    pub fn take(&mut self, elapsed: Duration) -> Result<(), Duration> {
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        // A hair under one counts: refills add up in floating point.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(2.0, 10.0);
        assert_eq!(bucket.take(Duration::ZERO), Ok(()));
        assert_eq!(bucket.take(Duration::ZERO), Ok(()));
        assert_eq!(bucket.take(Duration::ZERO), Err(Duration::from_millis(100)));
        assert_eq!(bucket.take(Duration::from_millis(100)), Ok(()));
        assert_eq!(bucket.take(Duration::from_secs(10)), Ok(()), "refilled");
    }
}
