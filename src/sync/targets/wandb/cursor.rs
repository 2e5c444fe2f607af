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
    /// Whether a stop asked for in W&B's UI was overridden
    /// (`--reopen-ended`): it is not reported again.
    #[serde(default)]
    pub(super) stop_accepted: bool,
}

impl RemoteData for Cursor {
    const TARGET: &'static str = "W&B";
}
