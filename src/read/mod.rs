//! Reading run directories: the only code that parses one.
//!
//! [`RunDir::open`] reads `run.json` and scans `events.log` into typed
//! records; [`RunDir::state`] tells live, finished, failed and crashed runs
//! apart; [`RunDir::view`] folds the records into calls, tables, config and
//! the workflow. The sync daemon, the report, `show` and `verify` all go
//! through here, so they agree on what a run contains.

mod log;
pub mod media;
mod view;

pub use log::{scan, LogProblem, LogProblemKind, LogScan};
pub use view::{scheduler_name, CallView, RunView};

use crate::error::{Error, IoContext, Result};
use crate::event::{Event, Record};
use crate::format::{RunMeta, EVENTS_LOG, FORMAT_VERSION, RUN_JSON};
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A writer holds the run's lock right now.
    Live,
    /// `run_finished` with status `finished` is recorded.
    Finished,
    /// `run_finished` with status `failed` is recorded.
    Failed,
    /// No writer and no `run_finished`: the writer died; or a
    /// `run_finished` marked `crashed` (the program died of an uncaught
    /// error and said so).
    Crashed,
}

impl RunState {
    /// Lower-case name, as shown by `ls`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Live => "live",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Crashed => "crashed",
        }
    }
}

/// A run directory read from disk.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The run directory.
    pub path: PathBuf,
    /// Its `run.json`.
    pub meta: RunMeta,
    /// Its event log, scanned.
    pub log: LogScan,
}

/// Opens `path` for reading only if it is a regular file, never blocking
/// and never following a symbolic link: a run directory from elsewhere may
/// hold a FIFO (an open would wait forever for a writer), a device, or a
/// link out of the run where a file should be.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                std::io::Error::other("it is a symbolic link, not a file of the run")
            }
            _ => e,
        })?;
    let md = file.metadata()?;
    if !md.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if md.file_type().is_fifo() {
            "a FIFO"
        } else if md.is_dir() {
            "a directory"
        } else {
            "a device or socket"
        };
        return Err(std::io::Error::other(format!(
            "it is {what}, not a regular file"
        )));
    }
    Ok(file)
}

/// The bytes of the regular file `path` (see [`open_regular`]), refusing
/// more than `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    read_regular_into(path, max, &mut out)?;
    Ok(out)
}

/// [`read_regular`] into `out` (cleared first, its allocation kept: for
/// reading thousands of files one after another).
pub fn read_regular_into(path: &Path, max: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(std::io::Error::other(format!(
            "{len} bytes, more than the {max} this file can hold"
        )));
    }
    out.clear();
    // What the file says its size is may be a lie (a sparse file, a file
    // growing meanwhile): room is reserved for at most 64 MiB up front,
    // the rest grows with what is really read, up to `max`.
    out.reserve(len.min(64 << 20) as usize);
    file.take(max + 1).read_to_end(out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "more than the {max} bytes this file can hold"
        )));
    }
    Ok(())
}

/// Largest image file decoded from a run.
pub const MAX_IMAGE_BYTES: u64 = 256 * 1024 * 1024;
/// Largest width or height of an image decoded from a run.
pub const MAX_SIDE: u32 = 16384;

/// The decoding limits of an image from a run: at most [`MAX_SIDE`] pixels
/// a side (and `image`'s default allocation cap).
pub fn image_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits
}

/// Decodes the image at `path` (a regular file, never through a link): at
/// most [`MAX_IMAGE_BYTES`] read, at most [`MAX_SIDE`] pixels a side
/// decoded; recorded images are RGB (any other colour type is converted).
/// The error says what is wrong with the file.
pub fn decode_image(path: &Path) -> std::result::Result<image::RgbImage, String> {
    let bytes = read_regular(path, MAX_IMAGE_BYTES).map_err(|e| e.to_string())?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    reader.limits(image_limits());
    let img = reader
        .decode()
        .map_err(|e| format!("not a readable image: {e}"))?;
    Ok(img.into_rgb8())
}

/// How many frames an animated PNG says it has (its `acTL` chunk), read
/// from its header alone; 1 for a still PNG. Why not, when the bytes are
/// not a PNG.
pub fn apng_frames(file: &[u8]) -> std::result::Result<u32, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(file));
    decoder.set_limits(png::Limits { bytes: 1 << 20 });
    let reader = decoder
        .read_info()
        .map_err(|e| format!("its PNG header cannot be read: {e}"))?;
    Ok(reader.info().animation_control.map_or(1, |a| a.num_frames))
}

/// What an MP4 holds, as its boxes say (no frame is decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mp4Video {
    /// The picture's width in pixels (its H.264 sample entry's).
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// How many frames (samples) its track has.
    pub frames: u32,
}

/// The picture size and frame count of an MP4 holding one H.264 video
/// track, as difflog writes them, read from its boxes with Mozilla's
/// parser (made for files from anyone); why not, when the bytes are no
/// such MP4 (not an MP4, no video track or several, another codec).
pub fn mp4_video(file: &[u8]) -> std::result::Result<Mp4Video, String> {
    let context = read_mp4(file)?;
    video_track(&context).map(|(_, video)| video)
}

/// An MP4's boxes, parsed by Mozilla's parser.
fn read_mp4(file: &[u8]) -> std::result::Result<mp4parse::MediaContext, String> {
    mp4parse::read_mp4(&mut std::io::Cursor::new(file))
        .map_err(|e| format!("it is not an MP4 that can be read ({e:?})"))
}

/// The one H.264 video track of a parsed MP4 and what it holds (see
/// [`mp4_video`]).
fn video_track(
    context: &mp4parse::MediaContext,
) -> std::result::Result<(&mp4parse::Track, Mp4Video), String> {
    let mut videos = context
        .tracks
        .iter()
        .filter(|t| t.track_type == mp4parse::TrackType::Video);
    let (Some(track), None) = (videos.next(), videos.next()) else {
        return Err("its MP4 does not hold exactly one video track".into());
    };
    let entry = track
        .stsd
        .as_ref()
        .and_then(|d| d.descriptions.first())
        .and_then(|e| match e {
            mp4parse::SampleEntry::Video(v) => Some(v),
            _ => None,
        })
        .ok_or("its MP4's video track describes no video")?;
    if entry.codec_type != mp4parse::CodecType::H264 {
        return Err(format!(
            "its MP4's video is {:?}, not H.264",
            entry.codec_type
        ));
    }
    let sizes = track
        .stsz
        .as_ref()
        .ok_or("its MP4's video track has no sample sizes")?;
    let frames = if sizes.sample_size == 0 {
        sizes.sample_sizes.len() as u64
    } else {
        // One size for all: the count is in the time-to-sample table.
        track.stts.as_ref().map_or(0, |t| {
            t.samples.iter().map(|s| u64::from(s.sample_count)).sum()
        })
    };
    let video = Mp4Video {
        width: u32::from(entry.width),
        height: u32::from(entry.height),
        frames: u32::try_from(frames).unwrap_or(u32::MAX),
    };
    Ok((track, video))
}

/// The UUID of the box that holds an XMP packet in an ISO media file (MP4),
/// as Adobe's XMP specification (part 3) gives it.
pub const XMP_UUID: [u8; 16] = [
    0xBE, 0x7A, 0xCF, 0xCB, 0x97, 0xA9, 0x42, 0xE8, 0x9C, 0x71, 0x99, 0x94, 0x91, 0xE3, 0xAF, 0xAC,
];

/// The largest XMP packet read from an MP4.
pub const MAX_MP4_XMP_BYTES: u64 = 1 << 20;

/// The XMP packet an MP4 carries in a top-level XMP box, if any (the first
/// of several); why not, when its top-level boxes cannot be walked (up to
/// an XMP box, or to the file's end), or the packet is larger than [`MAX_MP4_XMP_BYTES`] or not
/// UTF-8.
pub fn mp4_xmp(file: &[u8]) -> std::result::Result<Option<String>, String> {
    for b in (Mp4Boxes { file, at: 0 }) {
        let b = b?;
        let Some(packet) = b.xmp(file) else { continue };
        if packet.len() as u64 > MAX_MP4_XMP_BYTES {
            return Err(format!(
                "its MP4 box at byte {} holds an XMP packet over {MAX_MP4_XMP_BYTES} bytes: not read",
                b.start
            ));
        }
        return String::from_utf8(packet.to_vec()).map(Some).map_err(|_| {
            format!(
                "its MP4 box at byte {} holds an XMP packet that is not UTF-8",
                b.start
            )
        });
    }
    Ok(None)
}

/// SHA-256 (hex) of the video an MP4 plays: its one H.264 track's samples
/// in order, each with its presentation time — the same whatever boxes
/// were added around them (the XMP box the recorder adds, a C2PA manifest,
/// which moves the samples in the file). What `remake` compares a video
/// kept as MP4 by; why not, as [`mp4_video`] says, or when a sample lies
/// outside the file.
pub fn mp4_stream_digest(file: &[u8]) -> std::result::Result<String, String> {
    use sha2::Digest;
    let context = read_mp4(file)?;
    let (track, _) = video_track(&context)?;
    let samples = mp4parse::unstable::create_sample_table(track, 0.into())
        .ok_or("its MP4's sample tables cannot be read")?;
    let mut hash = sha2::Sha256::new();
    for (i, s) in samples.iter().enumerate() {
        let bytes = usize::try_from(s.start_offset.0)
            .ok()
            .zip(usize::try_from(s.end_offset.0).ok())
            .and_then(|(a, b)| file.get(a..b))
            .ok_or_else(|| format!("its MP4's sample {i} lies outside the file"))?;
        hash.update(s.start_composition.0.to_be_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    Ok(crate::format::hex(&hash.finalize()))
}

/// One top-level box of an MP4: where it starts, where its body starts,
/// where it ends, and its type.
struct Mp4Box {
    start: u64,
    body: u64,
    end: u64,
    kind: [u8; 4],
}

impl Mp4Box {
    /// Its XMP packet, when it is an XMP box.
    fn xmp<'a>(&self, file: &'a [u8]) -> Option<&'a [u8]> {
        if &self.kind != b"uuid" {
            return None;
        }
        let body = file.get(self.body as usize..self.end as usize)?;
        body.strip_prefix(&XMP_UUID[..])
    }
}

/// The top-level boxes of an MP4, in order; an error for a box that is cut
/// short or runs past the file's end (after which none is given).
struct Mp4Boxes<'a> {
    file: &'a [u8],
    at: u64,
}

impl Iterator for Mp4Boxes<'_> {
    type Item = std::result::Result<Mp4Box, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let len = self.file.len() as u64;
        let at = self.at;
        if at >= len {
            return None;
        }
        self.at = len;
        let bad = |what: String| Some(Err(format!("its MP4 box at byte {at} {what}")));
        let Some(head) = self.file.get(at as usize..at as usize + 8) else {
            return bad("is cut short".into());
        };
        let (size, header) = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
            0 => (len - at, 8),
            1 => match self.file.get(at as usize + 8..at as usize + 16) {
                Some(l) => (
                    u64::from_be_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]),
                    16,
                ),
                None => return bad("is cut short".into()),
            },
            n => (u64::from(n), 8),
        };
        if size < header {
            return bad(format!("says it is {size} bytes, less than its own header"));
        }
        let Some(end) = at.checked_add(size).filter(|&e| e <= len) else {
            return bad(format!("says it is {size} bytes, past the file's end"));
        };
        self.at = end;
        Some(Ok(Mp4Box {
            start: at,
            body: at + header,
            end,
            kind: [head[4], head[5], head[6], head[7]],
        }))
    }
}

/// Most frames taken from one video file (a minute at 1000 frames a second
/// is fewer): a file that says it has more is refused before any is read.
pub const MAX_VIDEO_FRAMES: u32 = 100_000;

/// Hands each frame of an animated PNG (a still PNG: its one frame) to
/// `frame`, in order, with its number and the picture's size, as 8-bit
/// RGB rows, and returns the picture's width,
/// height and frame count. Only whole frames are taken, as difflog writes
/// them (each covering the picture from its corner): a frame painting part
/// of it, more than [`MAX_VIDEO_FRAMES`], more than [`MAX_SIDE`] pixels a
/// side or bytes that are no PNG are refused, saying which frame and why.
/// The decoder's buffers are bounded; one frame is in memory at a time.
pub fn each_apng_frame(
    file: &[u8],
    mut frame: impl FnMut(u32, (u32, u32), &[u8]) -> std::result::Result<(), String>,
) -> std::result::Result<(u32, u32, u32), String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(file));
    decoder.set_limits(png::Limits { bytes: 1 << 30 });
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("its PNG header cannot be read: {e}"))?;
    let (width, height) = (reader.info().width, reader.info().height);
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "it is {width}x{height}, more than {MAX_SIDE} pixels a side"
        ));
    }
    let frames = reader.info().animation_control.map_or(1, |a| a.num_frames);
    if frames == 0 || frames > MAX_VIDEO_FRAMES {
        return Err(format!(
            "it says it has {frames} frames (1 to {MAX_VIDEO_FRAMES} are read)"
        ));
    }
    // An image before the animation's first control chunk is a poster for
    // viewers that know no animation, not a frame: skipped.
    let poster = reader.info().animation_control.is_some() && reader.info().frame_control.is_none();
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "its frames are too large to decode".to_string())?;
    let mut buf = vec![0u8; size];
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    if poster {
        reader
            .next_frame(&mut buf)
            .map_err(|e| format!("its poster image cannot be decoded: {e}"))?;
    }
    for i in 0..frames {
        let out = reader
            .next_frame(&mut buf)
            .map_err(|e| format!("frame {i} cannot be decoded: {e}"))?;
        if let Some(fc) = reader.info().frame_control {
            if (fc.width, fc.height, fc.x_offset, fc.y_offset) != (width, height, 0, 0) {
                return Err(format!(
                    "frame {i} paints {}x{} at ({}, {}), not the whole {width}x{height} picture",
                    fc.width, fc.height, fc.x_offset, fc.y_offset
                ));
            }
        }
        let data = &buf[..out.buffer_size()];
        let channels = match out.color_type {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => return Err(format!("frame {i} kept its palette")),
        };
        rgb.clear();
        for px in data.chunks_exact(channels) {
            match channels {
                1 | 2 => rgb.extend_from_slice(&[px[0], px[0], px[0]]),
                _ => rgb.extend_from_slice(&px[..3]),
            }
        }
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(format!(
                "frame {i} has {} bytes of pixels, not {width}x{height}",
                rgb.len()
            ));
        }
        frame(i, (width, height), &rgb)?;
    }
    Ok((width, height, frames))
}

/// The run among `runs` that the output path `out` (which may not exist
/// yet) would be written inside, if any: `pack -o` and `compare -o` must
/// never write into a run.
pub fn run_containing<'a>(
    out: &Path,
    runs: impl IntoIterator<Item = &'a Path>,
) -> Option<&'a Path> {
    // The output may not exist yet: resolve the nearest folder that does.
    let mut probe = out.to_path_buf();
    let mut tail = Vec::new();
    let target = loop {
        if let Ok(p) = probe.canonicalize() {
            break tail
                .iter()
                .rev()
                .fold(p, |acc: PathBuf, t: &std::ffi::OsString| acc.join(t));
        }
        let name = probe.file_name()?.to_os_string();
        tail.push(name);
        probe = match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
    };
    runs.into_iter()
        .find(|r| r.canonicalize().is_ok_and(|run| target.starts_with(&run)))
}

/// Largest `run.json` read (it holds a few identity fields).
const MAX_RUN_JSON: u64 = 1024 * 1024;
/// Largest event log read into memory: ~1 M rows with their media records.
/// A larger one (a hostile sparse file says it is 6 GiB) is that run's
/// error, never the process's: it is refused before anything is read.
pub const MAX_EVENTS_LOG: u64 = 512 * 1024 * 1024;

impl RunDir {
    /// Reads `run.json` and the event log of the run at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<RunDir> {
        let path = path.as_ref().to_path_buf();
        let meta = read_meta(&path)?;
        let log_path = path.join(EVENTS_LOG);
        let bytes = match read_regular(&log_path, MAX_EVENTS_LOG) {
            Ok(b) => b,
            // A run whose writer died between run.json and the first record.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&log_path, "read event log", e)),
        };
        Ok(RunDir {
            path,
            meta,
            log: scan(&bytes),
        })
    }

    /// The valid records, in order.
    pub fn records(&self) -> &[Record] {
        &self.log.records
    }

    /// Live, finished, failed or crashed. Probes the writer's lock.
    pub fn state(&self) -> RunState {
        run_state(&self.path, &self.log.records)
    }

    /// Folds the records into calls, tables, config and workflow.
    pub fn view(&self) -> RunView {
        RunView::build(&self.log.records)
    }

    /// Who last opened the run for writing (pid, host, since), from the log.
    pub fn last_writer(&self) -> Option<String> {
        self.log.records.iter().rev().find_map(|r| match &r.event {
            Event::RunStarted(s) => {
                Some(format!("pid {} on host {} (since {})", s.pid, s.host, r.ts))
            }
            Event::RunResumed(s) => {
                Some(format!("pid {} on host {} (since {})", s.pid, s.host, r.ts))
            }
            _ => None,
        })
    }
}

/// Reads and checks `run.json` of the run directory `dir`.
pub fn read_meta(dir: &Path) -> Result<RunMeta> {
    let path = dir.join(RUN_JSON);
    let md = std::fs::metadata(dir).ctx(dir, "open run directory")?;
    if !md.is_dir() {
        return Err(Error::NotARun {
            path: dir.to_path_buf(),
            why: "not a directory".into(),
        });
    }
    let bytes = match read_regular(&path, MAX_RUN_JSON) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotARun {
                path: dir.to_path_buf(),
                why: format!("it has no {RUN_JSON}"),
            })
        }
        Err(e) => return Err(Error::io(&path, "read run.json", e)),
    };
    parse_meta(&path, &bytes)
}

/// Parses and checks the bytes of a `run.json` (`path` names it in errors).
pub fn parse_meta(path: &Path, bytes: &[u8]) -> Result<RunMeta> {
    let path = path.to_path_buf();
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::BadRunJson {
            path: path.clone(),
            why: e.to_string(),
        })?;
    let format = value
        .get("format")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::BadRunJson {
            path: path.clone(),
            why: "missing or non-integer \"format\"".into(),
        })?;
    if format > u64::from(FORMAT_VERSION) || format == 0 {
        return Err(Error::UnsupportedFormat {
            path,
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    let meta: RunMeta = serde_json::from_value(value).map_err(|e| Error::BadRunJson {
        path: path.clone(),
        why: e.to_string(),
    })?;
    // Reports, archives and uploads name things after the id: it must be a
    // safe single path component.
    if !crate::format::is_run_id(&meta.id) {
        return Err(Error::BadRunJson {
            path,
            why: format!(
                "id {:?} is not a run id (letters, digits, '-', '_', '.'; not starting with '.')",
                meta.id
            ),
        });
    }
    Ok(meta)
}

/// Whether a writer holds the lock of the run at `dir` right now.
///
/// The probe takes a shared lock for an instant; a writer that starts at that
/// very instant retries for a moment before giving up, so the probe cannot
/// make it fail.
pub fn is_live(dir: &Path) -> bool {
    let Ok(file) = open_regular(&dir.join(EVENTS_LOG)) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Applies `f` to every item on all cores, keeping the order: reading many
/// runs (`ls`, `status` over thousands of runs) is parsing-bound.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
    if workers <= 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The state of the run in `dir` whose log holds `records`: live while
/// its writer holds the lock, else what its last `run_finished` says
/// (crashed when there is none). Probes the writer's lock.
pub fn run_state(dir: &Path, records: &[Record]) -> RunState {
    state_now(dir, ended_state(records))
}

/// The state of the run in `dir` whose log says it `ended` so (see
/// [`ended_state`]): live while its writer holds the lock. Probes the lock.
pub fn state_now(dir: &Path, ended: RunState) -> RunState {
    if is_live(dir) {
        RunState::Live
    } else {
        ended
    }
}

/// How the records say the run ended, when no writer holds it: its last
/// `run_finished`, else crashed. Never [`RunState::Live`].
pub fn ended_state(records: &[Record]) -> RunState {
    for rec in records.iter().rev() {
        if let Event::RunFinished(f) = &rec.event {
            if f.crashed {
                return RunState::Crashed;
            }
            return match f.status {
                crate::event::RunStatus::Finished => RunState::Finished,
                crate::event::RunStatus::Failed => RunState::Failed,
            };
        }
    }
    RunState::Crashed
}

/// The run directories directly under `root` (those holding a `run.json`),
/// sorted by name, which is creation order for difflog's ids. If `root` is
/// itself a run directory, it alone is returned.
pub fn find_runs(root: &Path) -> Result<Vec<PathBuf>> {
    if root.join(RUN_JSON).is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let entries = std::fs::read_dir(root).ctx(root, "list runs")?;
    let mut runs = Vec::new();
    for entry in entries {
        let entry = entry.ctx(root, "list runs")?;
        let p = entry.path();
        let is_hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !is_hidden && p.is_dir() && p.join(RUN_JSON).is_file() {
            runs.push(p);
        }
    }
    runs.sort();
    Ok(runs)
}

/// The regular files under `dir` (its folders walked, never through a
/// link) whose extension is one of `extensions` (any case), in no order;
/// more than `max` of them is an error naming the folder.
pub fn files_under(dir: &Path, extensions: &[&str], max: usize) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ctx(&d, "read the folder")? {
            let e = e.ctx(&d, "read the folder")?;
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() && has_extension(&e.path(), extensions) => {
                    files.push(e.path())
                }
                _ => {}
            }
            if files.len() > max {
                return Err(Error::Invalid(format!(
                    "{}: more than {max} {} files; take a part of it",
                    dir.display(),
                    extensions.join("/")
                )));
            }
        }
    }
    Ok(files)
}

/// Whether `path`'s extension is one of `extensions` (any case).
pub fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| extensions.iter().any(|e| x.eq_ignore_ascii_case(e)))
}

/// The path of the file `rel` (relative, as recorded) inside the run `run_dir`,
/// checked to be a regular file that is really inside the run: not a
/// symbolic link, not a FIFO or device, and not reached through a linked
/// folder (`media/` or a shard linked elsewhere). Sync, report and verify
/// read a run's media only through here (pack walks the run without
/// following links and refuses any), so a run from elsewhere can never make
/// difflog read, copy or upload a file outside it.
pub fn run_file(run_dir: &Path, rel: &str) -> Result<PathBuf> {
    let path = run_dir.join(rel);
    let refuse = |why: String| Error::UnsafeFile {
        run: run_dir.to_path_buf(),
        rel: rel.to_string(),
        why,
    };
    let md =
        std::fs::symlink_metadata(&path).map_err(|e| refuse(format!("cannot read it ({e})")))?;
    if md.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".into()));
    }
    if !md.is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    let root = run_dir
        .canonicalize()
        .map_err(|e| refuse(format!("cannot resolve the run directory ({e})")))?;
    let real = path
        .canonicalize()
        .map_err(|e| refuse(format!("cannot resolve it ({e})")))?;
    // Resolved, it must be the very path recorded: anything else went
    // through a link on the way.
    if real.strip_prefix(&root).ok() != Some(Path::new(rel)) {
        return Err(refuse(format!(
            "it resolves to {}, outside the run or through a linked folder",
            real.display()
        )));
    }
    Ok(real)
}

/// Total size in bytes of the regular files under `dir` (not following links).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}
