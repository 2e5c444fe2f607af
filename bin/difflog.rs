//! `difflog`: inspect, verify and benchmark run directories.
//! Parses arguments and calls the library; nothing else.

use clap::{Parser, Subcommand};
use difflog::cli::{self, actions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "difflog",
    version = difflog::VERSION,
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
    /// Generate images with a Stable Diffusion 1.x/2.x/XL/3/3.5 or FLUX.1
    /// model and record the run.
    ///
    /// The default model is `tiny`, a small Stable-Diffusion-architecture
    /// model with seeded weights that difflog generates itself (no download);
    /// `tiny-flux`, `tiny-flux-dev` and `tiny-sd3` are the FLUX.1- and
    /// SD3.5-shaped ones.
    Generate(Box<GenerateCli>),
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
        run: PathBuf,
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
        path: PathBuf,
        /// Root to look a run id up in (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Also check the provenance marks of every generated image: its
        /// C2PA manifest validates (and, with --trust, its signer chains to
        /// one of those anchors), and the watermark its record names reads
        /// back. Exit code 1 if a recorded mark is missing or broken.
        #[arg(long)]
        provenance: bool,
        /// Trust anchors for --provenance: a PEM file of the CA certificates
        /// the signer must chain to.
        #[arg(long, value_name = "PEM", requires = "provenance")]
        trust: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-run a recorded call from its record (model, weights digest,
    /// scheduler, arguments, seeds) and check that every image comes out
    /// byte-identical. Exit code 1 if any differs.
    Replay {
        /// Run directory, or a run id under --root.
        run: PathBuf,
        /// Call number (N of Pipeline-Call-N).
        #[arg(long)]
        call: u32,
        /// Only this row of the call's table.
        #[arg(long)]
        row: Option<u32>,
        /// Device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Root to look the run id up in (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print how an image (PNG, JPEG, WebP) says it was made: the
    /// `parameters` text (Automatic1111's format, which A1111, ComfyUI and
    /// civitai read) and difflog's recipe (run, call, row, model, seed);
    /// what ComfyUI, A1111/Forge, InvokeAI, Fooocus, SwarmUI and NovelAI
    /// write (NovelAI's copy hidden in the alpha channel too), in one schema
    /// (prompt, seed, steps, sampler, CFG, size, model, LoRAs…); XMP's
    /// digital source type; and its Content Credentials (C2PA), validated
    /// offline. With --run, say whether the image is one of that run's
    /// images unchanged (exit code 1 if not).
    Inspect {
        /// The image file.
        image: PathBuf,
        /// Trust anchors for Content Credentials: a PEM file of the CA
        /// certificates a signer must chain to for its credentials to be
        /// "trusted" (none are built in; without it, intact credentials are
        /// "valid").
        #[arg(long, value_name = "PEM")]
        trust: Option<PathBuf>,
        /// Also look for this invisible watermark: its text (as a
        /// provenance configuration's [watermark] text), or `bits:` and its
        /// 0s and 1s. diffusers' SDXL mark, and with --run the one the run
        /// recorded for the image, are always looked for.
        #[arg(long, value_name = "MESSAGE")]
        watermark: Vec<String>,
        /// A run directory or run id (under --root) to check the image against.
        #[arg(long)]
        run: Option<PathBuf>,
        /// Root to look a run id up in (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record another tool's output folder as a run: every PNG, JPEG and
    /// WebP file under DIR (never through a link), kept byte for byte, its
    /// metadata read as `inspect` reads it; one call per generation batch
    /// (files in a row whose settings agree but for the seed), one row per
    /// image (prompt, negative prompt, seed, source file). Importing the
    /// folder again adds only files no earlier import of it holds (none: no
    /// run is made). To follow a folder as it fills, see `difflog-sync
    /// watch --import`.
    Import {
        /// The output folder.
        dir: PathBuf,
        /// Whose images: auto (all of them, with whatever metadata they
        /// carry), or only one tool's: comfyui, a1111 (and Forge),
        /// invokeai, fooocus, swarmui, novelai, difflog.
        #[arg(long, default_value = "auto")]
        from: String,
        /// Root to create the run in (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a static HTML report of a run, or an index of all runs under a
    /// root, that opens from disk with no server and no network.
    Report {
        /// Run directory, run id (under --root), or root of runs.
        path: PathBuf,
        /// Folder to write the report into.
        #[arg(short, long)]
        output: PathBuf,
        /// Copy the images next to the report (otherwise it links the run's own files).
        #[arg(long)]
        self_contained: bool,
        /// Root to look a run id up in (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Compare the images of several runs on one static HTML page: a grid
    /// along recorded axes (default rows = prompt, columns = run), each
    /// image's record, a slider between two images and the per-pixel
    /// difference against each row's baseline. Thumbnails and differences
    /// are computed once and cached in the output folder.
    ///
    /// Axes: prompt, negative_prompt, seed, run, run_id, model, model_digest,
    /// pipeline, scheduler, steps, guidance, size, call, row, or any recorded
    /// call parameter (e.g. strength).
    Compare {
        /// Runs, run ids (under --root) or roots of runs.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Folder to write the page into (thumbnails and differences are cached there).
        #[arg(short, long)]
        output: PathBuf,
        /// Axis along the rows.
        #[arg(long, default_value = "prompt")]
        rows: String,
        /// Axis along the columns.
        #[arg(long, default_value = "run")]
        cols: String,
        /// What images line up by within a row, besides the two axes
        /// (comma-separated axes): an image with no partner leaves a cell
        /// marked missing. E.g. `prompt,row` when runs used different seeds.
        #[arg(long, default_value = "prompt,seed,row", value_delimiter = ',')]
        align: Vec<String>,
        /// Column value each row's images are compared against (default:
        /// the row's first image).
        #[arg(long)]
        baseline: Option<String>,
        /// Copy the full-size images next to the page, so the folder can be
        /// moved or sent on its own.
        #[arg(long)]
        self_contained: bool,
        /// Root to look run ids up in (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pack complete runs (runs or roots of runs) into one zstd-compressed
    /// tar, verified on the way, to carry them out on a disk.
    Pack {
        /// Runs or roots of runs.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The archive to write (e.g. runs.tar.zst).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Unpack a `difflog pack` archive (verified before anything is moved into place).
    Unpack {
        /// The archive.
        archive: PathBuf,
        /// Where to put the runs (default: DIFFLOG_DIR or ./runs).
        #[arg(short = 'C', long)]
        dest: Option<PathBuf>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(clap::Args)]
struct GenerateCli {
    /// Model: tiny-shapes (the default: a tiny trained model built into
    /// difflog that draws "a red circle on the left, blue background" and
    /// the like), tiny, tiny-xl, tiny-inpaint, tiny-flux, tiny-flux-dev,
    /// tiny-sd3 (seeded random weights: noise), sd15, sd21, sdxl, sd-turbo,
    /// sdxl-turbo, sd15-inpaint, sd2-inpaint, sdxl-inpaint, flux-schnell,
    /// flux-dev, sd3-medium, sd35-medium, sd35-large, sd35-large-turbo, a
    /// Hugging Face id (from the hub cache, HF_HOME) or a folder in the
    /// diffusers layout (built from its own configs).
    #[arg(long, default_value = "tiny-shapes")]
    model: String,
    /// Prompt; repeat for several.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Negative prompt.
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Second prompt: SDXL's and SD3's second text encoder (CLIP-G),
    /// FLUX.1's T5 (default: the prompt).
    #[arg(long)]
    prompt_2: Option<String>,
    /// Third prompt: SD3's third text encoder (T5) (default: the prompt);
    /// other models have none and refuse it.
    #[arg(long)]
    prompt_3: Option<String>,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    num_images_per_prompt: usize,
    /// Inference steps (default: the model's).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (default: the model's; ≤ 1 disables
    /// it). FLUX.1 dev: the guidance value the model takes as an input
    /// (default 3.5); FLUX.1 schnell takes none.
    #[arg(long)]
    guidance_scale: Option<f64>,
    /// Width in pixels, a multiple of 8; 16 for FLUX.1 and SD3 (default: the model's).
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels, a multiple of 8; 16 for FLUX.1 and SD3 (default: the model's).
    #[arg(long)]
    height: Option<usize>,
    /// Seed of the first image; image i uses seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The random generator the seed drives: `difflog` (its own, the same
    /// on every machine) or `torch-cpu` (PyTorch's CPU generator: image i's
    /// noise is what torch.Generator("cpu").manual_seed(seed + i) draws in
    /// diffusers). Recorded with the call; replay uses it again.
    #[arg(long, default_value = "difflog", value_parser = ["difflog", "torch-cpu"])]
    rng: String,
    /// Scheduler: ddim, euler-a or unipc (default: the model's). FLUX.1 and
    /// SD3 always sample with their flow-matching Euler sampler.
    #[arg(long)]
    scheduler: Option<String>,
    /// Input image for image-to-image and inpainting.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Image-to-image strength in (0, 1] (default: the model's; 1 for
    /// inpainting, which then starts from noise).
    #[arg(long)]
    strength: Option<f64>,
    /// Inpainting mask, the size of --image: white repaints, black keeps
    /// (an inpainting model: sd15-inpaint, sd2-inpaint, sdxl-inpaint,
    /// tiny-inpaint, or a folder/id whose UNet takes 9 channels).
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Refine the base model's latents with a refiner (SDXL: its refiner;
    /// or name one). Both calls are recorded in the same run.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    refiner: Option<String>,
    /// Project of the run.
    #[arg(long, default_value = "difflog")]
    project: String,
    /// Root of runs (default: DIFFLOG_DIR or ./runs).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Device: cpu or cuda:N (needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also write the final images as PNG files into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print per-phase timings.
    #[arg(long)]
    verbose: bool,
    /// Also write each call's tensors into this safetensors file, to compare
    /// with another implementation step by step: the schedule
    /// (`call1.timesteps`), each image's text states
    /// (`call1.image0.prompt_embeds`) and its latents after every step
    /// (`call1.image0.step0`, …), in float32 and in the layout diffusers'
    /// step callback sees.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// T5's tokens per prompt, 1 to 512 (FLUX.1, SD3; default: the model's —
    /// 256 for schnell and SD3, 512 for dev — as diffusers'
    /// `max_sequence_length`).
    #[arg(long, value_name = "N")]
    max_sequence_length: Option<usize>,
    /// Mark every image as this provenance configuration says (TOML: a
    /// signed C2PA manifest under [sign] — certificate_chain, private_key
    /// (mode 0600), algorithm —, an invisible watermark under [watermark] —
    /// text or bits); default DIFFLOG_PROVENANCE's. See "Provenance" in the
    /// README.
    #[arg(long, value_name = "FILE")]
    provenance: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Bench {
    /// A video's frames written on one core: as an MP4 (H.264, what a run
    /// keeps), an animated PNG (lossless, on request), a GIF (what W&B gets
    /// of an animated PNG) and the animated PNG made into that GIF, beside
    /// the recorder's still PNG of each frame — frames a second and bytes
    /// (issue 37).
    Video {
        /// Frames in the clip (a pan across one natural-looking picture).
        #[arg(long, default_value_t = 16)]
        frames: usize,
        /// Width and height in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
        /// The clip's frame rate.
        #[arg(long, default_value_t = 8.0)]
        fps: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate with the same model and requests with recording on and with
    /// recording disabled (interleaved, same process) and print the ratio.
    Generate {
        /// Model.
        #[arg(long, default_value = "tiny")]
        model: String,
        /// Calls per mode.
        #[arg(long, default_value_t = 20)]
        calls: usize,
        /// Inference steps per call.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Image size in pixels.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Root directory for the recorded run (default: DIFFLOG_DIR or ./runs).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Device: cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Images per call (num_images_per_prompt).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a root of many finished synthetic runs straight in the run
    /// format (no images), for the scale benchmark of `ls`, `status`, `watch`.
    Scale {
        /// Root to create the runs in.
        #[arg(long)]
        root: PathBuf,
        /// Number of runs.
        #[arg(long, default_value_t = 10_000)]
        runs: usize,
        /// Events per run.
        #[arg(long, default_value_t = 100)]
        events_per_run: usize,
        /// Calls per run (three events each; the rest are metrics).
        #[arg(long, default_value_t = 4)]
        calls_per_run: usize,
        /// Record every run as uploaded to this many (made-up) targets in
        /// the root's sync state, for `difflog-sync status` over a fleet.
        #[arg(long, default_value_t = 0)]
        targets: usize,
    },
    /// `difflog compare` over many runs × many images (recorded once with
    /// synthetic images under --root, reused after), with nothing cached
    /// and then cached, beside decoding every image once on all cores.
    Compare {
        /// Root for the runs (reused when it holds them; the page goes beside it).
        #[arg(long)]
        root: PathBuf,
        /// Number of runs.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Images per run.
        #[arg(long, default_value_t = 200)]
        images: usize,
        /// Image width and height in pixels.
        #[arg(long, default_value_t = 256)]
        size: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The PNG encodings compared on the same images: bytes and time of
    /// difflog's fast and compact encodings and zlib's default level, and
    /// PIL's default bytes when a Python with Pillow is given
    /// (`DIFFLOG_PNG` picks the recorder's).
    Png {
        /// Number of images.
        #[arg(long, default_value_t = 24)]
        count: usize,
        /// Image width and height in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
        /// Which images: natural (natural-looking structure, shapes, fine
        /// grain) or grain (`bench record`'s gradients with strong noise).
        #[arg(long, default_value = "natural")]
        images: String,
        /// A Python with Pillow, to measure PIL's default PNG bytes for the
        /// same pixels (and check that PIL reads the compact PNGs).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Also measure other compressors (fdeflate, miniz, zlib-rs,
        /// libdeflate at several levels), each with no per-row filter
        /// choice, the least-sum choice and difflog's entropy choice.
        #[arg(long)]
        candidates: bool,
        /// Take the images from the PNG files under this folder instead (a
        /// run's media folder, say): the first --count, in name order.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
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
        /// Sleep this many ms between calls (to generate a paced live run).
        #[arg(long, default_value_t = 0)]
        pace_ms: u64,
        /// Which images: grain (gradients with strong noise) or natural
        /// (natural-looking structure, shapes, fine grain).
        #[arg(long, default_value = "grain")]
        images: String,
        /// Record the same images with each PNG encoding (fast, compact),
        /// twice in turns, and print them side by side (runs removed after).
        #[arg(long)]
        compare_png: bool,
        /// With --compare-png: a Python with Pillow, to measure PIL's
        /// default PNG bytes for the same pixels.
        #[arg(long, requires = "compare_png")]
        python: Option<PathBuf>,
        /// With --compare-png: also encode and write the same images with
        /// the other compressors (fdeflate, miniz, zlib-rs, libdeflate at
        /// several levels, each with three filter choices) on all cores.
        #[arg(long, requires = "compare_png")]
        candidates: bool,
        /// How stored images are made durable: group (one syncfs before the
        /// records that name them; the default on Linux) or file (an fsync
        /// per file and its folder). Default: DIFFLOG_SYNC's.
        #[arg(long, value_parser = ["group", "file"])]
        sync: Option<String>,
        /// Record the same images with each sync mode (file, group), in
        /// turns for --rounds rounds, and print them side by side with
        /// their medians (runs removed after).
        #[arg(long, conflicts_with_all = ["compare_png", "sync"])]
        compare_sync: bool,
        /// Record the same images without marks and with this provenance
        /// configuration (signing, watermark), in turns for --rounds rounds,
        /// and print the ratio (issue 36's goal: ≤ 1.2 at 512²; runs removed
        /// after).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["compare_png", "compare_sync"])]
        compare_provenance: Option<PathBuf>,
        /// With --compare-sync or --compare-provenance: rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    difflog::cli::init_logging();
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let ok = |r: difflog::Result<()>| r.map(|()| true);
    let result = match cli.command {
        Command::Generate(g) => {
            difflog::generate::generate(&generate_args(*g), &mut out).map(|_| true)
        }
        Command::Ls { root: r, json } => ok(cli::ls(&mut out, &root(r), json)),
        Command::Show { run, root: r, json } => {
            ok(cli::show(&mut out, &cli::resolve_run(&run, &root(r)), json))
        }
        Command::Report {
            path,
            output,
            self_contained,
            root: r,
        } => {
            let dir = cli::resolve_run(&path, &root(r));
            ok(actions::report(&mut out, &dir, &output, self_contained))
        }
        Command::Compare {
            paths,
            output,
            rows,
            cols,
            align,
            baseline,
            self_contained,
            root: r,
            json,
        } => {
            let base = root(r);
            let paths: Vec<PathBuf> = paths.iter().map(|p| cli::resolve_run(p, &base)).collect();
            let opts = difflog::report::compare::CompareOptions {
                rows,
                cols,
                align,
                baseline,
                self_contained,
            };
            ok(actions::compare(&mut out, &paths, &output, &opts, json))
        }
        Command::Pack { paths, output } => ok(actions::pack(&mut out, &paths, &output)),
        Command::Unpack { archive, dest } => ok(actions::unpack(&mut out, &archive, &root(dest))),
        Command::Replay {
            run,
            call,
            row,
            device,
            root: r,
            json,
        } => {
            let dir = cli::resolve_run(&run, &root(r));
            actions::replay(&mut out, &dir, call, row, &device, json)
        }
        Command::Import {
            dir,
            from,
            root: r,
            json,
        } => {
            let opts = difflog::import::ImportOpts {
                from,
                dir,
                root: root(r),
            };
            ok(actions::import(&mut out, &opts, json))
        }
        Command::Inspect {
            image,
            trust,
            watermark,
            run,
            root: r,
            json,
        } => {
            let dir = run.map(|run| cli::resolve_run(&run, &root(r)));
            cli::inspect::watermarks_given(&watermark).and_then(|watermarks| {
                let with = cli::inspect::Against {
                    run: dir.as_deref(),
                    trust: trust.as_deref(),
                    watermarks,
                };
                cli::inspect::inspect(&mut out, &image, &with, json)
            })
        }
        Command::Verify {
            path,
            root: r,
            provenance,
            trust,
            json,
        } => {
            let dir = cli::resolve_run(&path, &root(r));
            let marks = provenance.then_some(trust.as_deref());
            cli::verify(&mut out, &dir, marks, json).map(|bad| !bad)
        }
        Command::Bench { bench } => ok(run_bench(&mut out, bench)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // Every command's JSON switch is spelled `--json`.
            let json = std::env::args().any(|a| a == "--json");
            difflog::cli::report_failure("difflog", &e, json);
            ExitCode::from(2)
        }
    }
}

/// The runs folder: the one given, or the default.
fn root(r: Option<PathBuf>) -> PathBuf {
    r.unwrap_or_else(difflog::run::default_root)
}

fn generate_args(g: GenerateCli) -> difflog::generate::GenerateArgs {
    difflog::generate::GenerateArgs {
        model: g.model,
        prompts: g.prompt,
        negative_prompt: g.negative_prompt,
        prompt_2: g.prompt_2,
        prompt_3: g.prompt_3,
        num_images_per_prompt: g.num_images_per_prompt,
        steps: g.steps,
        guidance_scale: g.guidance_scale,
        width: g.width,
        height: g.height,
        seed: g.seed,
        rng: difflog::pipelines::Rng::parse(&g.rng).unwrap_or_default(),
        scheduler: g.scheduler,
        image: g.image,
        strength: g.strength,
        mask: g.mask,
        refiner: g.refiner.map(|r| (!r.is_empty()).then_some(r)),
        project: g.project,
        runs: root(g.runs),
        device: g.device,
        out: g.out,
        verbose: g.verbose,
        trace: g.trace,
        max_sequence_length: g.max_sequence_length,
        provenance: g.provenance,
    }
}

fn run_bench(out: &mut dyn std::io::Write, bench: Bench) -> difflog::Result<()> {
    match bench {
        Bench::Video {
            frames,
            size,
            fps,
            json,
        } => {
            let opts = difflog::bench::video::VideoBench { frames, size, fps };
            actions::bench_video(out, &opts, json)
        }
        Bench::Generate {
            model,
            calls,
            steps,
            size,
            root: r,
            device,
            batch,
            json,
        } => {
            let opts = difflog::bench::GenerateBench {
                model,
                calls,
                steps,
                size,
                root: root(r),
                device,
                batch,
            };
            actions::bench_generate(out, &opts, json)
        }
        Bench::Scale {
            root: r,
            runs,
            events_per_run,
            calls_per_run,
            targets,
        } => {
            let opts = difflog::bench::scale::ScaleRoot {
                root: r,
                runs,
                events_per_run,
                calls_per_run,
                targets,
            };
            actions::bench_scale(out, &opts)
        }
        Bench::Compare {
            root: r,
            runs,
            images,
            size,
            json,
        } => {
            let opts = difflog::bench::compare::CompareBench {
                root: r,
                runs,
                images,
                size,
            };
            actions::bench_compare(out, &opts, json)
        }
        Bench::Png {
            count,
            size,
            images,
            python,
            candidates,
            from,
            json,
        } => {
            let opts = difflog::bench::png::PngBench {
                count,
                size,
                images,
                python,
                candidates,
                from,
            };
            actions::bench_png(out, &opts, json)
        }
        Bench::Record {
            calls,
            size,
            images_per_call,
            root: r,
            queue,
            no_baseline,
            pace_ms,
            images,
            compare_png,
            python,
            candidates,
            sync,
            compare_sync,
            compare_provenance,
            rounds,
            json,
        } => {
            let sync = sync.map(|s| match s.as_str() {
                "file" => difflog::run::durable::SyncMode::File,
                _ => difflog::run::durable::SyncMode::Group,
            });
            let opts = difflog::bench::RecordBench {
                images_per_call,
                queue,
                no_baseline,
                pace_ms,
                images,
                sync,
                ..difflog::bench::RecordBench::new(calls, size, root(r))
            };
            if compare_png {
                actions::bench_record_png(out, &opts, python.as_deref(), candidates, json)
            } else if compare_sync {
                actions::bench_record_sync(out, &opts, rounds, json)
            } else if let Some(config) = compare_provenance {
                actions::bench_record_provenance(out, &opts, &config, rounds, json)
            } else {
                actions::bench_record(out, &opts, json)
            }
        }
    }
}
