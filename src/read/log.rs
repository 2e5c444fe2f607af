//! Scanning an event log: framed records in, typed records plus a precise
//! account of any damage out.
//!
//! A scan never panics and never guesses: it returns the longest valid prefix
//! of records (each checksummed, sequence numbers 1, 2, 3, … without gaps)
//! and, if the file holds more than that prefix, what is wrong at which byte.
//! Damage at the end of the file, with no valid record after it, is a *torn
//! tail* — what a crash in mid-write leaves — and is ignored by readers. Damage
//! followed by valid records is *corruption*; readers stop at it and `verify`
//! reports it.

use crate::event::decode_record;
use crate::event::Record;

/// What is wrong after the valid prefix of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogProblemKind {
    /// The log ends in an incomplete record (no end of line): what a crash
    /// mid-append leaves.
    TornTail,
    /// A whole record is damaged (bad checksum, bad contents, out of
    /// sequence), followed by `valid_after` records that still check out.
    Corrupt {
        /// Number of well-formed records found after the damage.
        valid_after: usize,
    },
}

/// Damage found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogProblem {
    /// Byte offset of the first byte that is not part of the valid prefix.
    pub offset: u64,
    /// Torn tail or corruption.
    pub kind: LogProblemKind,
    /// What is wrong with the record at `offset`.
    pub why: String,
}

/// The result of scanning a log.
#[derive(Debug, Clone, Default)]
pub struct LogScan {
    /// The valid prefix, in order.
    pub records: Vec<Record>,
    /// Length in bytes of the valid prefix.
    pub valid_len: u64,
    /// Total bytes in the file.
    pub file_len: u64,
    /// Damage after the valid prefix, if any.
    pub problem: Option<LogProblem>,
}

/// Scans the bytes of an event log.
pub fn scan(bytes: &[u8]) -> LogScan {
    let mut out = LogScan {
        file_len: bytes.len() as u64,
        ..LogScan::default()
    };
    // One record per line: sized once, not grown by doubling (a record is
    // large, and growing moves them all).
    out.records
        .reserve_exact(memchr::memchr_iter(b'\n', bytes).count());
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(nl) = memchr::memchr(b'\n', &bytes[pos..]) else {
            out.problem = Some(LogProblem {
                offset: pos as u64,
                kind: LogProblemKind::TornTail,
                why: format!(
                    "incomplete record ({} bytes, no end of line)",
                    bytes.len() - pos
                ),
            });
            break;
        };
        let line = &bytes[pos..pos + nl];
        let expected = out.records.len() as u64 + 1;
        let result = decode_record(line).and_then(|rec| {
            if rec.seq == expected {
                Ok(rec)
            } else {
                Err(format!(
                    "sequence number {} where {expected} was expected",
                    rec.seq
                ))
            }
        });
        match result {
            Ok(rec) => {
                out.records.push(rec);
                pos += nl + 1;
                out.valid_len = pos as u64;
            }
            Err(why) => {
                // A line that decodes but is out of sequence counts as valid
                // data after the damage: it was not torn, something removed
                // or reordered records.
                let valid_after = count_valid_lines(&bytes[pos..]);
                // A crash tears only the unterminated end of the log (the
                // writer appends whole lines; a partial write is a prefix).
                // A whole line that does not check out, even the last one,
                // was damaged or edited afterwards.
                let kind = LogProblemKind::Corrupt { valid_after };
                out.problem = Some(LogProblem {
                    offset: pos as u64,
                    kind,
                    why,
                });
                break;
            }
        }
    }
    out
}

fn count_valid_lines(bytes: &[u8]) -> usize {
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| decode_record(line).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::encode_record;
    use crate::event::{Event, MetricEvent};

    fn log(n: u64) -> Vec<u8> {
        (1..=n)
            .flat_map(|seq| {
                encode_record(
                    seq,
                    "2026-01-01T00:00:00.000000Z",
                    &Event::Metric(MetricEvent {
                        name: format!("m{seq}"),
                        value: seq as f64,
                        step: None,
                    }),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn clean_log_has_no_problem() {
        let bytes = log(3);
        let s = scan(&bytes);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.valid_len, bytes.len() as u64);
        assert!(s.problem.is_none());
    }

    #[test]
    fn damage_to_a_whole_line_is_corruption_an_unterminated_tail_is_torn() {
        let bytes = log(3);
        let first_len = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut mid = bytes.clone();
        mid[first_len + 20] ^= 0x40;
        let s = scan(&mid);
        assert_eq!(s.records.len(), 1);
        assert_eq!(
            s.problem.as_ref().unwrap().kind,
            LogProblemKind::Corrupt { valid_after: 1 }
        );
        assert_eq!(s.problem.unwrap().offset, first_len as u64);

        // A flipped byte in the last whole line is damage too (issue 13):
        // only an unterminated tail is what a crash leaves.
        let mut end = bytes.clone();
        let n = end.len();
        end[n - 5] ^= 0x40;
        let s = scan(&end);
        assert_eq!(s.records.len(), 2);
        assert_eq!(
            s.problem.unwrap().kind,
            LogProblemKind::Corrupt { valid_after: 0 }
        );
        let s = scan(&bytes[..n - 5]);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.problem.unwrap().kind, LogProblemKind::TornTail);
    }

    #[test]
    fn a_missing_record_breaks_the_sequence() {
        let bytes = log(3);
        let first_len = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut gap = bytes[..first_len].to_vec();
        let second_end =
            first_len + bytes[first_len..].iter().position(|&b| b == b'\n').unwrap() + 1;
        gap.extend_from_slice(&bytes[second_end..]);
        let s = scan(&gap);
        assert_eq!(s.records.len(), 1);
        let p = s.problem.unwrap();
        assert!(p.why.contains("sequence number 3"), "{}", p.why);
        assert_eq!(p.kind, LogProblemKind::Corrupt { valid_after: 1 });
    }
}
