//! `difflog`: inspect, verify and benchmark run directories.
//! Parses arguments and calls the library; nothing else.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "difflog",
    version,
    about = "Offline run recorder for diffusion image generation",
    long_about = "Offline run recorder for diffusion image generation.\n\n\
        Runs live in DIFFLOG_DIR (default ./runs), one self-contained directory each:\n\
        run.json, events.log and media/. Nothing here uses the network."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the runs under ROOT: project, name, state, calls, images, size.
    Ls {
        /// Root directory of runs (default: DIFFLOG_DIR or ./runs).
        root: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a run: identity, config, pipelines, workflow and one table per call.
    Show {
        /// Run directory, or a run id under --root.
        run: String,
        /// Root to look the run id up in (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a run (or every run under a root): record checksums, media
    /// digests, references. Exit code 1 if anything is damaged.
    Verify {
        /// Run directory, run id, or root of runs.
        path: String,
        /// Root to look a run id up in (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Record synthetic calls (one deterministic RGB image each) into a new
    /// run and compare with PNG-encoding the same images on all cores.
    Record {
        /// Number of calls.
        #[arg(long, default_value_t = 200)]
        calls: usize,
        /// Image width and height in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
        /// Images per call.
        #[arg(long, default_value_t = 1)]
        images_per_call: usize,
        /// Root directory for the run (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Writer queue capacity in images.
        #[arg(long, default_value_t = difflog::run::DEFAULT_QUEUE_CAPACITY)]
        queue: usize,
        /// Skip the baselines (only record; ratios are then null).
        #[arg(long)]
        no_baseline: bool,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIFFLOG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let root = |r: Option<PathBuf>| r.unwrap_or_else(difflog::run::default_root);
    let result = match cli.command {
        Command::Ls { root: r, json } => difflog::cli::ls(&mut out, &root(r), json).map(|()| true),
        Command::Show { run, root: r, json } => {
            let dir = difflog::cli::resolve_run(&run, &root(r));
            difflog::cli::show(&mut out, &dir, json).map(|()| true)
        }
        Command::Verify {
            path,
            root: r,
            json,
        } => {
            let dir = difflog::cli::resolve_run(&path, &root(r));
            difflog::cli::verify(&mut out, &dir, json).map(|damaged| !damaged)
        }
        Command::Bench {
            bench:
                Bench::Record {
                    calls,
                    size,
                    images_per_call,
                    root: r,
                    queue,
                    no_baseline,
                    json,
                },
        } => {
            let opts = difflog::bench::RecordBench {
                calls,
                size,
                images_per_call,
                root: root(r),
                queue,
                no_baseline,
            };
            difflog::bench::record(&opts).map(|f| {
                use std::io::Write;
                let text = if json {
                    serde_json::to_string(&f).unwrap_or_default() + "\n"
                } else {
                    difflog::bench::render(&f, calls, size)
                };
                let _ = out.write_all(text.as_bytes());
                true
            })
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("difflog: {e}");
            ExitCode::from(2)
        }
    }
}
