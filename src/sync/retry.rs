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

/// The limits of one retry loop.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The first wait.
    pub base: Duration,
    /// The longest wait (a server's `Retry-After` may ask for more, up to
    /// [`MAX_RETRY_AFTER_S`]).
    pub max: Duration,
    /// Attempts in all, the first included.
    pub attempts: u32,
}

/// What a retry loop does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait (at least the server's `Retry-After`, if given) and try again.
    Retry(Option<Duration>),
    /// Give up with this error.
    Stop,
}

/// The one retry loop of the sync daemon: runs `op` (given the attempt
/// number, from 0) until it succeeds, `decide` stops it, or
/// `policy.attempts` attempts were made, waiting with [`Backoff`] in between.
/// Callers say only *what* is worth retrying; *how* lives here.
///
/// # Cancel safety
/// Dropping the future stops between or during attempts; an attempt dropped
/// mid-request may or may not have reached the server, which is why every
/// request the daemon retries is idempotent.
pub async fn retry<T, E, F, Fut>(
    policy: Policy,
    mut op: F,
    mut decide: impl FnMut(&E) -> Decision,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(policy.base, policy.max);
    let mut attempt = 0;
    loop {
        let e = match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        attempt += 1;
        match decide(&e) {
            Decision::Retry(after) if attempt < policy.attempts => {
                tokio::time::sleep(backoff.next_delay(after)).await;
            }
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32) -> Policy {
        Policy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            attempts,
        }
    }

    /// On paused time: a transient failure is retried with growing waits
    /// until it succeeds; the waits add up to what the backoff allows.
    #[tokio::test(start_paused = true)]
    async fn retries_until_success_with_backoff_on_paused_time() {
        let start = tokio::time::Instant::now();
        let mut seen = Vec::new();
        let r: Result<u32, &str> = retry(
            policy(5),
            |attempt| {
                seen.push(tokio::time::Instant::now() - start);
                async move {
                    if attempt < 3 {
                        Err("down")
                    } else {
                        Ok(attempt)
                    }
                }
            },
            |_| Decision::Retry(None),
        )
        .await;
        assert_eq!(r, Ok(3));
        assert_eq!(seen.len(), 4);
        // Waits within [d/2, d] for d = 100, 200, 400 ms.
        let waits: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
        for (w, cap) in waits.iter().zip([100u64, 200, 400]) {
            let cap = Duration::from_millis(cap);
            assert!(*w >= cap / 2 && *w <= cap, "{w:?} vs {cap:?}");
        }
    }

    /// A permanent failure stops at once; attempts are bounded; a server's
    /// Retry-After is waited for (up to the cap).
    #[tokio::test(start_paused = true)]
    async fn stops_on_permanent_errors_bounds_attempts_and_honours_retry_after() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let r: Result<(), &str> = retry(
            policy(5),
            |_| {
                calls += 1;
                async { Err("bad request") }
            },
            |_| Decision::Stop,
        )
        .await;
        assert_eq!((r, calls), (Err("bad request"), 1));
        assert_eq!(tokio::time::Instant::now(), start);

        let mut calls = 0;
        let r: Result<(), &str> = retry(
            policy(3),
            |_| {
                calls += 1;
                async { Err("429") }
            },
            |_| Decision::Retry(Some(Duration::from_secs(30))),
        )
        .await;
        assert_eq!((r, calls), (Err("429"), 3));
        let waited = tokio::time::Instant::now() - start;
        assert!(waited >= Duration::from_secs(60), "{waited:?}");
    }

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
