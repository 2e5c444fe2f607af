//! The diffusers environment the Python tests run in: `scripts/python-env`
//! installs torch, diffusers and transformers into `.venv-diffusers` on
//! first use and builds difflog's Python package into it; a test fails
//! (never skips) when that cannot be done. `scripts/test` does that once
//! before the tests and names the venv in `DIFFLOG_TEST_PYTHON_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `tests/python`, where the Python side of the tests lives.
pub fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The venv's python: the one `scripts/test` set up (its bin folder in
/// `DIFFLOG_TEST_PYTHON_BIN`), or set up once per test process.
pub fn python() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("DIFFLOG_TEST_PYTHON_BIN") {
            return Ok(PathBuf::from(dir).join("python"));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-env");
        let o = Command::new(&script).output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
        Ok(PathBuf::from(dir).join("python"))
    });
    match bin {
        Ok(p) => p.clone(),
        Err(e) => {
            panic!("cannot set up diffusers and difflog's Python package (scripts/python-env): {e}")
        }
    }
}

/// Runs the venv's python with `args` in `tests/python`, with `envs` set.
pub fn py(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(python());
    c.args(args)
        .current_dir(here())
        .env("DIFFLOG_BIN", super::difflog_bin())
        .env("PYTHONPATH", here())
        .env("OMP_NUM_THREADS", "1")
        .env("PYTHONWARNINGS", "ignore::FutureWarning");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}
