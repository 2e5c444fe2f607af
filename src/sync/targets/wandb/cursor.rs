//! Where a run stands at W&B, kept as the state's remote data.

use super::*;

/// Where a run stands at W&B (kept as the state's remote data).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct Cursor {
    pub(super) entity: String,
    pub(super) project: String,
    pub(super) run: String,
    /// History lines the server acknowledged: the next line's offset.
    pub(super) history: u64,
    /// Whether the run was marked complete.
    pub(super) complete: bool,
}

impl Cursor {
    pub(super) fn of(remote: &Remote) -> SyncResult<Cursor> {
        serde_json::from_str(&remote.data)
            .map_err(|e| SyncError::permanent(format!("corrupt W&B data in sync state: {e}")))
    }

    pub(super) fn store(&self, remote: &mut Remote) {
        remote.data = serde_json::to_string(self).unwrap_or_default();
    }
}
