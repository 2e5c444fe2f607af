//! `difflog-sync`: upload run directories to a tracking server.
//! Parses arguments and calls the library; nothing else.

use clap::{Parser, Subcommand};
use difflog::sync::{commands, verify, watch, TargetSpec};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "difflog-sync",
    version = difflog::VERSION,
    about = "Upload difflog runs to a tracking server (MLflow, W&B), once and completely",
    long_about = "Upload difflog runs to a tracking server (MLflow, W&B), once and completely.\n\n\
        Targets:\n\
        --to mlflow+http://HOST:PORT (or mlflow+https). Credentials as MLflow's client reads\n\
        them: MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.\n\
        --to wandb://ENTITY[/PROJECT] (project defaults to each run's own). Key and server as\n\
        W&B's client reads them: WANDB_API_KEY, WANDB_BASE_URL (default https://api.wandb.ai).\n\
        Or --config FILE (TOML, mode 0600) with `to` and `token` (MLflow) or `api_key` (W&B),\n\
        or several [[target]] tables. Several targets (--to repeated, and/or --config): each\n\
        run is read once and fed to all of them; each keeps its own state and backoff, and one\n\
        that is down or refuses the credentials holds back no other.\n\
        An MLflow run whose artifact_uri is s3://, gs://, wasbs://, abfss:// or a reachable\n\
        file:// path gets its artifacts written there directly, with credentials as MLflow's\n\
        client reads them (AWS_*, MLFLOW_S3_ENDPOINT_URL, AZURE_STORAGE_*, GOOGLE_APPLICATION_CREDENTIALS).\n\
        State (what was uploaded) lives in ROOT/.difflog-sync/state.db, never inside a run.\n\n\
        Exit codes: 0 all uploaded, 1 something could not be uploaded, 2 usage or local\n\
        error, 3 credentials refused."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct TargetArgs {
    /// Target URL: mlflow+http://127.0.0.1:5000 or wandb://ENTITY[/PROJECT].
    /// Repeat for several targets.
    #[arg(long, required_unless_present = "config")]
    to: Vec<String>,
    /// TOML file with `to = "…"` and credentials (`token` or `username`/`password`
    /// for MLflow, `api_key` and optional `base_url` for W&B), or several
    /// `[[target]]` tables of them; mode 0600.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Uploads at once per run.
    #[arg(long, default_value_t = difflog::sync::engine::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Cap this process's total upload bandwidth (every upload, every
    /// target): e.g. 2MiB/s, 500KB/s, 16Mbit/s. Default: no cap.
    #[arg(long, value_name = "RATE")]
    max_rate: Option<String>,
    /// Thin links: send every pending run's metadata and tables before any
    /// media, then the media one run at a time, oldest first. On whenever
    /// --max-rate is given.
    #[arg(long)]
    metadata_first: bool,
    /// A remote run deleted on the server (MLflow: in its trash, or gone;
    /// W&B: deleted, its id refused for good) is made again as a new remote
    /// run (on W&B named `<id>-2`, …) and the whole run uploaded to it.
    /// Without it such a run is reported (error code remote_deleted) and
    /// left alone.
    #[arg(long)]
    recreate_deleted: bool,
    /// A remote run ended on the server by someone else (MLflow: its status
    /// set to FINISHED, FAILED or KILLED) while the run goes on is uploaded
    /// to again, its status difflog's once more. Without it such a run is
    /// reported (error code remote_ended) and left alone.
    #[arg(long)]
    reopen_ended: bool,
}

impl TargetArgs {
    /// Whether the metadata of every run goes before any media.
    fn metadata_first(&self) -> bool {
        self.metadata_first || self.max_rate.is_some()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Follow run directories as they appear and grow, and upload whatever is
    /// new whenever the target is reachable. Stops on SIGINT/SIGTERM.
    Watch {
        /// Roots of runs to watch.
        #[arg(required = true)]
        roots: Vec<PathBuf>,
        #[command(flatten)]
        target: TargetArgs,
        /// Also follow another tool's output folder as it fills, TOOL:FOLDER
        /// (TOOL: auto, comfyui, a1111, invokeai, fooocus, swarmui, novelai,
        /// difflog; what `difflog import --from` takes): each new image is
        /// recorded, as `difflog import` records it, into a run under the
        /// first root — one run per folder, session and (UTC) day, named
        /// "FOLDER DATE" in project `import`, finished when watch stops —
        /// and uploaded with the others. Files earlier imports of the folder
        /// hold are skipped; a file still being written waits. Repeatable.
        #[arg(long = "import", value_name = "TOOL:FOLDER")]
        imports: Vec<difflog::import::ImportSpec>,
    },
    /// Upload runs once (runs, roots of runs, or `difflog pack` archives),
    /// with a progress bar and a summary. Exit code 1 if anything could not
    /// be uploaded.
    Upload {
        /// Run directories, roots of runs, or .tar.zst archives.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        target: TargetArgs,
        /// Print one JSON object per target instead (one line each).
        #[arg(long)]
        json: bool,
        /// Give up on a run that is not uploaded within this many seconds
        /// (a server that accepts connections and never answers); 0: no limit.
        /// What the server acknowledged is kept; the rest goes next time.
        #[arg(long, default_value_t = 600, value_name = "SECONDS")]
        run_timeout: u64,
    },
    /// Read each run back from the server and compare it with the run on
    /// disk: every image (the SHA-256 of the bytes the server returns), every
    /// table by content, params or config, difflog's tags, every metric's
    /// history (W&B: every history line, the summary and each table's
    /// artifact), the run-level files and the status. Prints per run
    /// `complete` or exactly what is missing, extra or different. Exit code
    /// 1 if anything differs. MLflow (proxied artifacts and every object
    /// store) and W&B.
    Verify {
        /// Run directories, roots of runs, or .tar.zst archives.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        target: TargetArgs,
        /// Print one JSON object per run and target, and a summary object
        /// per target (one line each).
        #[arg(long)]
        json: bool,
        /// Upload again what is missing or different (only that), then read
        /// the run back once more. What is extra on the server is reported,
        /// never deleted.
        #[arg(long)]
        repair: bool,
    },
    /// Per run and target: recorded vs uploaded calls and media, pending, the
    /// last error. Reads local state only.
    Status {
        /// Run directories or roots of runs.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print JSON instead (every run and target, a summary entry,
        /// the targets' reachability).
        #[arg(long)]
        json: bool,
        /// List every run and target; by default, past 20 rows, only the
        /// runs with something pending or an error are listed, under the
        /// summary.
        #[arg(long)]
        all: bool,
        /// Read every run's event log again instead of the counts cached
        /// from the last `status` (they are used only while a run's files
        /// are unchanged; the cache is kept under difflog's cache folder,
        /// `~/.cache/difflog/status`, and may be deleted at any time).
        #[arg(long)]
        fresh: bool,
    },
}

fn specs(t: &TargetArgs) -> difflog::Result<Vec<TargetSpec>> {
    difflog::sync::set_recreate_deleted(t.recreate_deleted);
    difflog::sync::set_reopen_ended(t.reopen_ended);
    if let Some(r) = &t.max_rate {
        difflog::sync::rate::set_max_rate(difflog::sync::rate::parse_rate(r)?)?;
    }
    TargetSpec::from_args(&t.to, t.config.as_deref())
}

fn main() -> ExitCode {
    difflog::cli::init_logging();
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Watch {
            roots,
            target,
            imports,
        } => specs(&target).and_then(|s| {
            difflog::cli::actions::watch(
                &roots,
                &s,
                &imports,
                (target.concurrency, target.metadata_first()),
                &mut out,
            )
            .map(|stop| match stop {
                watch::Stop::Signal => ExitCode::SUCCESS,
                watch::Stop::Auth(msg) => {
                    eprintln!(
                        "difflog-sync: credentials refused, stopping: {}",
                        difflog::terminal::escape(&msg)
                    );
                    ExitCode::from(commands::EXIT_AUTH)
                }
            })
        }),
        Command::Upload {
            paths,
            target,
            json,
            run_timeout,
        } => specs(&target).and_then(|s| {
            let limit = (run_timeout > 0).then(|| std::time::Duration::from_secs(run_timeout));
            commands::upload(
                &paths,
                &s,
                json,
                target.concurrency,
                limit,
                target.metadata_first(),
                &mut out,
            )
            .map(|o| {
                if o.auth_failed {
                    ExitCode::from(commands::EXIT_AUTH)
                } else if o.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
        }),
        Command::Verify {
            paths,
            target,
            json,
            repair,
        } => specs(&target).and_then(|s| {
            verify::verify(&paths, &s, json, repair, target.concurrency, &mut out).map(|o| {
                if o.auth_failed {
                    ExitCode::from(commands::EXIT_AUTH)
                } else if o.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
        }),
        Command::Status {
            paths,
            json,
            all,
            fresh,
        } => commands::status(&paths, json, all, fresh, &mut out).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Every command's JSON switch is spelled `--json`.
            let json = std::env::args().any(|a| a == "--json");
            difflog::cli::report_failure("difflog-sync", &e, json);
            ExitCode::from(2)
        }
    }
}
