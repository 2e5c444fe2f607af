//! Where a run stands at W&B, kept as the state's remote data.

use super::*;
use std::collections::BTreeMap;

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
    /// The GIFs sent for the run's videos kept as animated PNGs, by APNG
    /// digest and rate: their digests are in history lines, which a later
    /// pass writes again whether or not the video is still in the run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) gifs: BTreeMap<String, Option<super::videos::SentGif>>,
}

impl RemoteData for Cursor {
    const TARGET: &'static str = "W&B";
}
