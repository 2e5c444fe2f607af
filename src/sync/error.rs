//! The error of every sync operation: what failed (never a secret), whether
//! retrying can help, the server's status and the local error's code it
//! wraps, so `--json` and `status` can name its kind.

use super::retry::Class;
use std::time::Duration;

/// A failed sync operation: what happened and whether retrying can help.
#[derive(Debug, Clone)]
pub struct SyncError {
    /// Transient, permanent, or bad credentials.
    pub class: Class,
    /// What failed, naming the request; passed through
    /// [`crate::redact::redact`] when built, so it never holds a secret.
    pub message: String,
    /// How long the server asked us to wait.
    pub retry_after: Option<Duration>,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// No connection could be made (refused, unreachable): the server is
    /// down, so retrying this one request at once is pointless — the caller
    /// backs off for the whole target instead.
    pub unreachable: bool,
    /// The code of the local error this one wraps (a damaged run, the
    /// state database), see [`crate::Error::code`].
    pub local: Option<&'static str>,
    /// The target (its state key) and the run id it concerns, once known.
    pub context: Option<(String, String)>,
    /// The run's deadline (`--run-timeout`) passed: retrying within the
    /// same deadline cannot help.
    pub deadline: bool,
    /// The remote run was changed on the server in a way difflog-sync
    /// leaves to the user.
    pub on_server: Option<OnServer>,
}

/// What was done to a remote run on the server that difflog-sync leaves to
/// the user to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnServer {
    /// Deleted (MLflow: in the trash, or gone).
    Deleted,
    /// Ended by someone else while the run goes on.
    Ended,
}

impl OnServer {
    /// The error code: `remote_deleted` or `remote_ended`.
    pub fn code(self) -> &'static str {
        match self {
            OnServer::Deleted => "remote_deleted",
            OnServer::Ended => "remote_ended",
        }
    }
}

impl SyncError {
    /// A permanent error with `message`.
    pub fn permanent(message: impl Into<String>) -> SyncError {
        SyncError {
            class: Class::Permanent,
            message: crate::redact::redact(&message.into()),
            retry_after: None,
            status: None,
            unreachable: false,
            local: None,
            context: None,
            deadline: false,
            on_server: None,
        }
    }

    /// The remote run was deleted on the server: permanent, never retried;
    /// it is re-created only when asked (`--recreate-deleted`).
    pub fn remote_deleted(message: impl Into<String>) -> SyncError {
        SyncError {
            on_server: Some(OnServer::Deleted),
            ..SyncError::permanent(message)
        }
    }

    /// The remote run was ended on the server (by someone else) while the
    /// run goes on: permanent; it is re-opened only when asked
    /// (`--reopen-ended`).
    pub fn remote_ended(message: impl Into<String>) -> SyncError {
        SyncError {
            on_server: Some(OnServer::Ended),
            ..SyncError::permanent(message)
        }
    }

    /// A transient error with `message`.
    pub fn transient(message: impl Into<String>) -> SyncError {
        SyncError {
            class: Class::Transient,
            ..SyncError::permanent(message)
        }
    }

    /// A permanent error wrapping a local one (reading the run, the state),
    /// keeping its code.
    pub fn local(e: &crate::Error) -> SyncError {
        SyncError {
            local: Some(e.code()),
            ..SyncError::permanent(e.to_string())
        }
    }

    /// This error, noting the target and run it concerns.
    pub fn in_run(mut self, target: &str, run: &str) -> SyncError {
        self.context
            .get_or_insert_with(|| (target.to_string(), run.to_string()));
        self
    }

    /// The same failure as a difflog error, its code kept.
    pub fn into_error(self) -> crate::Error {
        crate::Error::Sync {
            code: self.code(),
            why: self.message,
        }
    }

    /// A stable code naming the kind of error, for `--json` output
    /// (`"error_code"`): `credentials`, `unreachable`, `rate_limited`,
    /// `server_error`, `refused` (another 4xx), `network` (no answer),
    /// `remote_deleted`, `remote_ended`, a local error's own code, or
    /// `failed`.
    pub fn code(&self) -> &'static str {
        if self.class == Class::Auth {
            return "credentials";
        }
        if let Some(change) = self.on_server {
            return change.code();
        }
        if self.unreachable {
            return "unreachable";
        }
        match (self.status, self.local) {
            (Some(429), _) => "rate_limited",
            (Some(s), _) if s >= 500 => "server_error",
            (Some(_), _) => "refused",
            (None, Some(code)) => code,
            (None, None) if self.class == Class::Transient => "network",
            (None, None) => "failed",
        }
    }
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SyncError {}

/// Result of a sync operation.
pub type SyncResult<T> = Result<T, SyncError>;
