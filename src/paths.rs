//! Where difflog keeps its own files outside any run: the cache of
//! generated models and of `status`'s per-run counts. One place, so every
//! part honours the same variables.

use std::path::PathBuf;

/// Where difflog caches what it can make again: `DIFFLOG_CACHE`, else
/// `$XDG_CACHE_HOME/difflog`, else `~/.cache/difflog`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("DIFFLOG_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("difflog");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("difflog"),
        None => PathBuf::from(".difflog-cache"),
    }
}
