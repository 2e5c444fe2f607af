//! Retry policy, in one place: which failures are worth retrying, and how
//! long to wait.
//!
//! Transient: connection refused or reset, timeouts, 5xx, 429 — retried with
//! exponential backoff and full jitter, honouring `Retry-After`. Permanent:
//! 400, 403, 404 and other 4xx — reported once, not retried. 401 is its own
//! kind: bad credentials stop the whole target, since every request would
//! fail the same way.

use std::time::Duration;

/// How a failed request should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Try again later.
    Transient,
    /// The request itself is wrong; retrying cannot help.
    Permanent,
    /// The credentials are wrong or missing; stop talking to this target.
    Auth,
}

/// Classifies an HTTP status code.
pub fn classify_status(status: u16) -> Class {
    match status {
        401 => Class::Auth,
        408 | 429 => Class::Transient,
        500..=599 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// The longest wait a server's `Retry-After` can impose (a hostile or
/// confused server could otherwise park the uploader for hours).
pub const MAX_RETRY_AFTER_S: f64 = 120.0;

/// Parses a `Retry-After` header given in seconds (HTTP dates are rare from
/// trackers and are treated as absent), capped at [`MAX_RETRY_AFTER_S`].
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let v = value?.trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER_S)))
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff starting at `base`, never longer than `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The wait before the next attempt: uniform in `[d/2, d]` where
    /// `d = min(max, base · 2^attempt)`; a server's `Retry-After` wins if longer.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        let d = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = rand::random::<f64>() * 0.5 + 0.5;
        let mine = d.mul_f64(jitter);
        match retry_after {
            Some(ra) if ra > mine => ra.min(self.max.max(ra)),
            _ => mine,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(401), Class::Auth);
        assert_eq!(classify_status(429), Class::Transient);
        assert_eq!(classify_status(503), Class::Transient);
        assert_eq!(classify_status(400), Class::Permanent);
        assert_eq!(classify_status(403), Class::Permanent);
        assert_eq!(classify_status(404), Class::Permanent);
    }

    #[test]
    fn backoff_grows_with_jitter_caps_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut last_cap = Duration::ZERO;
        for i in 0..8u32 {
            let d = b.next_delay(None);
            let cap = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(2));
            assert!(
                d <= cap && d >= cap / 2,
                "attempt {i}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
            assert!(cap >= last_cap);
            last_cap = cap;
        }
        assert_eq!(b.attempts(), 8);
        let d = b.next_delay(Some(Duration::from_secs(7)));
        assert_eq!(
            d,
            Duration::from_secs(7),
            "Retry-After longer than our delay wins"
        );
        b.reset();
        assert!(b.next_delay(None) <= Duration::from_millis(100));
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
        // Issue 13 (11): a server cannot park the uploader for an hour.
        assert_eq!(
            parse_retry_after(Some("3600")),
            Some(Duration::from_secs(120))
        );
    }
}
