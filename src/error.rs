//! Errors of the recorder and the reader.
//!
//! Every variant names what it concerns (a run, a file, a byte offset, a
//! sequence number) so that a user can find the damage without a debugger.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads the environment variable `name` as one of `choices` (unset, empty
/// or not Unicode: `default`); any other value is an [`Error::Setting`]
/// naming the choices.
pub fn env_choice<T: Copy>(name: &str, default: T, choices: &[(&str, T)]) -> Result<T> {
    let Ok(v) = std::env::var(name) else {
        return Ok(default);
    };
    if v.is_empty() {
        return Ok(default);
    }
    match choices.iter().find(|(text, _)| *text == v) {
        Some((_, choice)) => Ok(*choice),
        None => Err(Error::Setting {
            name: name.into(),
            value: v,
            why: format!(
                "expected {}",
                choices
                    .iter()
                    .map(|(text, _)| format!("\"{text}\""))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        }),
    }
}

/// Everything that can go wrong while recording or reading a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a file or directory failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What difflog was doing ("create run directory", "append event", …).
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A run is already being written by another writer.
    #[error("{path}: run is already being written by {holder}; one writer per run")]
    Locked {
        /// The run directory.
        path: PathBuf,
        /// Who holds the lock, as far as the run's log tells (pid, host, since).
        holder: String,
    },
    /// A path is not a run directory (no `run.json`).
    #[error("{path}: not a difflog run directory ({why})")]
    NotARun {
        /// The directory given.
        path: PathBuf,
        /// What is missing or wrong.
        why: String,
    },
    /// `run.json` exists but cannot be used.
    #[error("{path}: invalid run.json: {why}")]
    BadRunJson {
        /// The `run.json` file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The event log is damaged before its end (not merely a torn tail), so it
    /// cannot be appended to.
    #[error("{path}: event log damaged at byte {offset}: {why}")]
    CorruptLog {
        /// The `events.log` file.
        path: PathBuf,
        /// Byte offset of the first bad record.
        offset: u64,
        /// What is wrong there.
        why: String,
    },
    /// The run format version is newer than this difflog understands.
    #[error("{path}: run format version {found} is not supported (this difflog reads up to {supported})")]
    UnsupportedFormat {
        /// The `run.json` file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
        /// Highest version this build reads.
        supported: u32,
    },
    /// An image could not be encoded or stored.
    #[error("media for {key}: {why}")]
    Media {
        /// The media key (`Generated-Image/Pipeline-Call-3`, …).
        key: String,
        /// What went wrong.
        why: String,
    },
    /// Recording into a run failed (a media file or the log could not be written).
    #[error("run {run}: recording failed: {source}")]
    Recording {
        /// The run id.
        run: String,
        /// The first error of the background writer.
        #[source]
        source: WriteError,
    },
    /// A setting (environment variable, option) has an invalid value.
    #[error("invalid setting {name}={value:?}: {why}")]
    Setting {
        /// The variable or option name.
        name: String,
        /// The value given.
        value: String,
        /// What would be accepted.
        why: String,
    },
    /// A file a run refers to is not a regular file inside the run (a
    /// symbolic link, a FIFO, a path through a linked folder): never read.
    #[error("{run}: refusing to read {rel}: {why}; difflog reads only regular files inside run directories")]
    UnsafeFile {
        /// The run directory.
        run: PathBuf,
        /// The path relative to it.
        rel: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `difflog pack` archive cannot be made or unpacked (a damaged or
    /// hostile archive, a run that cannot be packed as it is).
    #[error("{}", archive_text(path, entry.as_deref(), why))]
    Archive {
        /// The archive, or the run or file being packed.
        path: PathBuf,
        /// The archive's entry concerned (a file or a run folder), if one is.
        entry: Option<PathBuf>,
        /// What is wrong ("is larger than …" after an entry).
        why: String,
    },
    /// Model weights or their index cannot be found or used.
    #[error("{model}: {why}")]
    Weights {
        /// The model concerned: its preset or hub id, its folder, or the
        /// weight file or index.
        model: String,
        /// What is wrong with it.
        why: String,
    },
    /// A pipeline could not be loaded or run (a model that does not fit the
    /// request, a computation that failed).
    #[error("{model}: {why}")]
    Pipeline {
        /// The model's id or folder.
        model: String,
        /// The pipeline's error.
        why: String,
    },
    /// A file of a run is not what the run recorded (its size or digest
    /// changed since): the run is damaged, and nothing of that file is used.
    #[error("{path}: {why}; the run is damaged (see difflog verify)")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What differs.
        why: String,
    },
    /// A recorded call cannot be replayed (no such call, other weights, a
    /// row that lacks what regenerating it needs, a pipeline that failed).
    #[error("{run}: {why}")]
    Replay {
        /// The run directory.
        run: PathBuf,
        /// Why.
        why: String,
    },
    /// A file given to difflog that is not part of a run (a sync config, an
    /// image to inspect) cannot be used.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Something difflog made could not be encoded (a PNG, a JSON document).
    #[error("cannot encode {what}: {why}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        why: String,
    },
    /// A sync operation failed; `code` keeps its kind (a sync error's own
    /// code: `credentials`, `unreachable`, `rate_limited`, …).
    #[cfg(feature = "sync")]
    #[error("{why}")]
    Sync {
        /// What failed (never a secret).
        why: String,
        /// The sync error's code: `credentials`, `unreachable`, …
        code: &'static str,
    },
    /// The sync state database cannot be opened, read or written.
    #[cfg(feature = "sync")]
    #[error("{path}: sync state: {source}")]
    State {
        /// The state database.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The operating system refused a facility difflog needs (threads for
    /// the async runtime, file watching, a signal handler).
    #[error("cannot {what}: {why}")]
    System {
        /// What difflog was setting up.
        what: &'static str,
        /// The system's error.
        why: String,
    },
    /// An argument or request is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Why the background writer of a run stopped recording: its first error,
/// shared by its threads (so cloneable; the underlying error behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The writer's threads are gone (after an earlier error, or at the end).
    #[error("the background writer has stopped")]
    Stopped,
    /// The threads that store media are gone.
    #[error("the storage threads have stopped")]
    StorageStopped,
    /// A writer thread panicked.
    #[error("a background writer thread panicked")]
    Panicked,
    /// The run has ended; nothing more can be recorded into it.
    #[error("the run is already finished")]
    Finished,
    /// An image could not be encoded, or its file written.
    #[error("could not store {key}: {source}")]
    Store {
        /// The media key.
        key: String,
        /// What went wrong.
        #[source]
        source: std::sync::Arc<Error>,
    },
    /// A record could not be encoded.
    #[error("could not encode {kind} event: {source}")]
    Event {
        /// The event's kind.
        kind: &'static str,
        /// What went wrong.
        #[source]
        source: std::sync::Arc<serde_json::Error>,
    },
    /// The event log could not be appended to or synced.
    #[error(transparent)]
    Log(std::sync::Arc<Error>),
}

fn archive_text(path: &std::path::Path, entry: Option<&std::path::Path>, why: &str) -> String {
    match entry {
        Some(e) => format!("{}: entry {} {why}", path.display(), e.display()),
        None => format!("{}: {why}", path.display()),
    }
}

impl Error {
    /// An archive error about `path` itself (the archive, a run or file
    /// being packed).
    pub fn archive(path: impl Into<PathBuf>, why: impl Into<String>) -> Error {
        Error::Archive {
            path: path.into(),
            entry: None,
            why: why.into(),
        }
    }

    /// An archive error about `entry` of the archive at `path`; `why`
    /// continues the sentence "entry E …".
    pub fn archive_entry(
        path: impl Into<PathBuf>,
        entry: impl Into<PathBuf>,
        why: impl Into<String>,
    ) -> Error {
        Error::Archive {
            path: path.into(),
            entry: Some(entry.into()),
            why: why.into(),
        }
    }

    /// A [`Error::Weights`] about `model`.
    pub fn weights(model: impl std::fmt::Display, why: impl Into<String>) -> Error {
        Error::Weights {
            model: model.to_string(),
            why: why.into(),
        }
    }

    /// A [`Error::Pipeline`] of `model`.
    pub fn pipeline(model: impl std::fmt::Display, why: impl std::fmt::Display) -> Error {
        Error::Pipeline {
            model: model.to_string(),
            why: why.to_string(),
        }
    }

    /// A [`Error::File`] about `path`.
    pub fn file(path: impl Into<PathBuf>, why: impl Into<String>) -> Error {
        Error::File {
            path: path.into(),
            why: why.into(),
        }
    }

    /// A [`Error::Encode`] of `what`.
    pub fn encode(what: &'static str, why: impl std::fmt::Display) -> Error {
        Error::Encode {
            what,
            why: why.to_string(),
        }
    }

    /// A stable code naming the kind of error, for scripts reading `--json`
    /// output (`"error_code"`): it does not change with the message's words.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Locked { .. } => "locked",
            Error::NotARun { .. } => "not_a_run",
            Error::BadRunJson { .. } => "bad_run_json",
            Error::CorruptLog { .. } => "corrupt_log",
            Error::UnsupportedFormat { .. } => "unsupported_format",
            Error::Media { .. } => "media",
            Error::Recording { .. } => "recording",
            Error::Setting { .. } => "setting",
            Error::UnsafeFile { .. } => "unsafe_file",
            Error::Archive { .. } => "archive",
            Error::Weights { .. } => "weights",
            Error::Pipeline { .. } => "pipeline",
            Error::File { .. } => "bad_file",
            Error::Replay { .. } => "replay",
            Error::Damaged { .. } => "damaged",
            Error::Encode { .. } => "encode",
            #[cfg(feature = "sync")]
            Error::Sync { code, .. } => code,
            #[cfg(feature = "sync")]
            Error::State { .. } => "state",
            Error::System { .. } => "system",
            Error::Invalid(_) => "invalid",
        }
    }
}

impl Error {
    /// Builds an [`Error::Io`] from a path, an action and an I/O error.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// Adds a path and an action to I/O results.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`Error::Io`] naming `path` and `action`.
    fn ctx(self, path: &std::path::Path, action: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, path: &std::path::Path, action: &'static str) -> Result<T> {
        self.map_err(|e| Error::io(path, action, e))
    }
}

/// Parses a TOML configuration (a sync config, a provenance configuration)
/// into its table; the error says the reason and the line, never the line
/// itself (it may hold a token).
#[cfg(any(feature = "sync", feature = "watermark"))]
pub fn toml_table(text: &str) -> std::result::Result<toml::Table, String> {
    text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        format!(
            "invalid TOML{}: {}",
            line.map(|l| format!(" on line {l}")).unwrap_or_default(),
            e.message()
        )
    })
}
