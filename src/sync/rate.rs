//! The upload bandwidth cap (`--max-rate`): one pacer for the whole process,
//! shared by every upload to every target, so a box on a slow or metered
//! link never sends faster than it was told, however many uploads run at
//! once.
//!
//! Every request body goes out in chunks, and each chunk waits for its slot:
//! a chunk of `n` bytes occupies `n / rate` seconds of the link, slots are
//! handed out in the order they are asked for (uploads share the link
//! fairly), and an idle link saves up at most [`BURST`] bytes. Nothing spins:
//! a waiting upload sleeps until its slot.

use crate::error::{Error, Result};
use futures_util::StreamExt;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bytes a body is paced in.
pub const CHUNK: usize = 64 * 1024;
/// What an idle link may send at once before the pace applies.
pub const BURST: u64 = 64 * 1024;

/// A pacer of `rate` bytes per second (the generic cell rate algorithm: the
/// time the link is next free).
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    next: Mutex<Instant>,
}

impl Pacer {
    /// A pacer of `bytes_per_s` (at least 1).
    pub fn new(bytes_per_s: u64) -> Pacer {
        Pacer {
            rate: bytes_per_s.max(1) as f64,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the link for `n` bytes; returns how long to wait before
    /// sending them.
    pub fn reserve(&self, n: usize) -> Duration {
        let now = Instant::now();
        let saved = Duration::from_secs_f64(BURST as f64 / self.rate);
        let floor = now.checked_sub(saved).unwrap_or(now);
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let begin = (*next).max(floor);
        *next = begin + Duration::from_secs_f64(n as f64 / self.rate);
        begin.saturating_duration_since(now)
    }
}

static PACER: OnceLock<Pacer> = OnceLock::new();

/// Caps this process's upload bandwidth at `bytes_per_s`, for every upload
/// from now on. Set once (a second call with another rate is refused).
pub fn set_max_rate(bytes_per_s: u64) -> Result<()> {
    if bytes_per_s == 0 {
        return Err(bad("0", "the rate must be above zero"));
    }
    let p = PACER.get_or_init(|| Pacer::new(bytes_per_s));
    if p.rate as u64 != bytes_per_s {
        return Err(Error::Invalid("the upload rate is already set".into()));
    }
    Ok(())
}

/// Whether a cap is set.
pub fn active() -> bool {
    PACER.get().is_some()
}

/// Waits for the slot of `n` bytes (at once when no cap is set).
pub async fn take(n: usize) {
    if let Some(p) = PACER.get() {
        let wait = p.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request body from memory, sent in paced chunks when a cap is set (the
/// caller sets `Content-Length`: a streamed body has none of its own).
pub fn paced(bytes: Vec<u8>) -> reqwest::Body {
    if !active() || bytes.is_empty() {
        return bytes.into();
    }
    let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    let s = futures_util::stream::iter(chunks).then(|c| async move {
        take(c.len()).await;
        Ok::<_, std::io::Error>(c)
    });
    reqwest::Body::wrap_stream(s)
}

fn bad(value: &str, why: &str) -> Error {
    Error::Setting {
        name: "--max-rate".into(),
        value: value.into(),
        why: why.into(),
    }
}

/// Parses a rate: a number with an optional unit and `/s` — `2MiB/s`,
/// `500KB/s`, `1.5M`, `800k`, `1000000` (bytes). `K`/`KB` = 1000,
/// `Ki`/`KiB` = 1024, and so on for M and G; `b`/`bit` suffixes are bits.
pub fn parse_rate(s: &str) -> Result<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("ps"))
        .unwrap_or(t)
        .trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| bad(s, "expected a number and a unit, such as 2MiB/s or 500KB/s"))?;
    let unit = unit.trim();
    let (scale, bits) = match unit {
        "" | "B" => (1.0, false),
        "k" | "K" | "KB" | "kB" => (1e3, false),
        "Ki" | "KiB" => (1024.0, false),
        "M" | "MB" => (1e6, false),
        "Mi" | "MiB" => (1024.0 * 1024.0, false),
        "G" | "GB" => (1e9, false),
        "Gi" | "GiB" => (1024.0 * 1024.0 * 1024.0, false),
        "bit" | "b" => (1.0, true),
        "kbit" | "Kbit" | "kb" | "Kb" => (1e3, true),
        "Mbit" | "Mb" => (1e6, true),
        "Gbit" | "Gb" => (1e9, true),
        _ => {
            return Err(bad(
                s,
                &format!("unknown unit {unit:?}: use B, KB, KiB, MB, MiB, GB, GiB (or Mbit)"),
            ))
        }
    };
    let bytes = n * scale / if bits { 8.0 } else { 1.0 };
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(bad(s, "the rate must be at least 1 byte per second"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_with_their_units() {
        assert_eq!(parse_rate("2MiB/s").unwrap(), 2 * 1024 * 1024);
        assert_eq!(parse_rate("500KB/s").unwrap(), 500_000);
        assert_eq!(parse_rate("1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_rate("800k").unwrap(), 800_000);
        assert_eq!(parse_rate("1000000").unwrap(), 1_000_000);
        assert_eq!(parse_rate("16Mbit/s").unwrap(), 2_000_000);
        assert_eq!(parse_rate(" 3 GiB/s ").unwrap(), 3 * 1024 * 1024 * 1024);
        for bad in ["", "fast", "0", "0.1", "2XB/s", "-1M", "1e9"] {
            let e = parse_rate(bad).unwrap_err().to_string();
            assert!(e.contains("--max-rate"), "{bad}: {e}");
        }
    }

    #[test]
    fn slots_follow_the_rate_and_an_idle_link_saves_only_a_burst() {
        let p = Pacer::new(1_000_000);
        std::thread::sleep(Duration::from_millis(200));
        // Idle: the first burst goes at once, then each 100 kB waits 0.1 s more.
        assert!(p.reserve(BURST as usize).is_zero());
        let waits: Vec<f64> = (0..5).map(|_| p.reserve(100_000).as_secs_f64()).collect();
        for (i, w) in waits.iter().enumerate() {
            let want = 0.1 * i as f64;
            assert!((w - want).abs() < 0.02, "slot {i}: waits {w} s, not {want}");
        }
    }
}
