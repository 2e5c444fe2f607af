//! The background writer: keeps PNG encoding and file I/O off the caller's
//! hot path while keeping the log's order and the crash rule.
//!
//! Two stages, both fed through bounded channels so memory stays bounded
//! (a full queue blocks the caller: back-pressure, never unbounded growth):
//!
//! * an encoder pool (one thread per core) turns raw images into PNG bytes
//!   and their digest; a few storage threads write and rename them into
//!   the media store (syncing each with `DIFFLOG_SYNC=file`) and fill a
//!   [`Slot`] with the result;
//! * one appender thread takes commands in submission order, waits for the
//!   slots a command needs, and only then appends its records. So a `media`
//!   record always follows its file's rename, a `row` its media, and a
//!   `call_finished` all of its rows: a kill at any instant leaves a prefix
//!   in which every finished call is complete.
//!
//! The appender batches records into one `write` and syncs the log when its
//! queue runs empty (group commit), so a fast producer pays for few fsyncs.
//! Before it writes records that name media files not yet durable, it makes
//! them durable with one barrier ([`super::durable`]), and it holds such
//! records back until a commit (or a full buffer) rather than pay a barrier
//! for each image.
//! The first error is sticky: it is reported by `flush`/`finish`, and a call
//! whose media could not be stored is recorded as failed with that error.

use super::durable::{Barrier, SyncFs, SyncMode};
use super::log::EventLog;
use super::marks::{encode_generated, mark_video, Encoded, Generated, MadeBy, Marker};
use super::media::{
    encode_png_using, sha256_hex, stage_file, store_file, Pixels, PngEncoding, Staged, StoredMedia,
};
use super::video::VideoFormat;
use crate::error::{Error, Result, WriteError};
use crate::event::encode_record;
use crate::event::{CallFinished, CallStatus, Cell, Event, MediaEvent, RunFinished, RunStatus};
use crate::format::hex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why an image was not stored: the encoder's or the store's error, or
/// its threads being gone.
type SlotError = Result<Arc<Error>, WriteError>;

/// Where an image's storage result will appear.
pub(crate) struct Slot {
    value: Mutex<Option<Result<StoredMedia, SlotError>>>,
    ready: Condvar,
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            value: Mutex::new(None),
            ready: Condvar::new(),
        })
    }

    fn fill(&self, v: Result<StoredMedia, SlotError>) {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        *g = Some(v);
        self.ready.notify_all();
    }

    fn is_ready(&self) -> bool {
        self.value
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn wait(&self) -> Result<StoredMedia, SlotError> {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = g.as_ref() {
                return v.clone();
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A table cell whose image may still be encoding.
pub(crate) enum PendingCell {
    /// A cell with its final value.
    Ready(Cell),
    /// An image cell waiting for its slot.
    Image { column: String, slot: Arc<Slot> },
}

/// What the appender is asked to do, in order.
pub(crate) enum Cmd {
    /// Append an event as is.
    Event { ts: String, event: Box<Event> },
    /// Append a `media` event once the slot is filled.
    Media {
        ts: String,
        key: String,
        caption: Option<String>,
        call: Option<u32>,
        slot: Arc<Slot>,
    },
    /// Append a `row` event once its image cells are stored.
    Row {
        ts: String,
        call: u32,
        table: String,
        index: u32,
        cells: Vec<PendingCell>,
    },
    /// Write and sync everything before, then answer with the sticky error.
    Flush(SyncSender<Result<(), WriteError>>),
}

struct Job {
    what: JobImage,
    slot: Arc<Slot>,
}

/// What an encoder thread gets.
enum JobImage {
    /// Pixels to encode (an input image, a user's own).
    Pixels(Arc<dyn Pixels>),
    /// A generated image: encoded with its recipe and marked as the run's
    /// provenance configuration says.
    Generated(Generated),
    /// An image file's bytes and format, stored as they are (an imported
    /// image): only its digest is computed.
    Encoded(Vec<u8>, &'static str, (u32, u32)),
    /// A video's frames, encoded as one MP4 or animated PNG.
    Video(VideoFrames),
}

/// A video handed to the writer: its frames, the rate they play at and
/// where that rate came from.
pub(crate) struct VideoFrames {
    /// The frames, in order, all of the first's size.
    pub(crate) frames: Vec<Arc<dyn Pixels>>,
    /// Frames a second they play at.
    pub(crate) fps: f64,
    /// Where the rate came from (see [`crate::event::Video::fps_from`]).
    pub(crate) fps_from: Option<String>,
    /// The PNG text chunks an animated PNG carries (the XMP packet of a
    /// generated video, which an MP4 carries in its XMP box).
    pub(crate) text: Vec<crate::recipe::TextChunk>,
    /// The file the run keeps of it.
    pub(crate) format: VideoFormat,
    /// The call and row that made it (`None`: a video the call was given),
    /// which its manifest states when the run signs.
    pub(crate) made_by: Option<MadeBy>,
    /// A video the call was given, as its generated videos' manifests
    /// share it: its animated PNG is made once for both.
    pub(crate) input: Option<Arc<super::marks::InputVideo>>,
}

/// A video encoded (and marked): the file, its format (extension), the
/// record of what it plays and its size.
type EncodedVideo = (Encoded, &'static str, crate::event::Video, (u32, u32));

impl VideoFrames {
    /// The file (an MP4, or an animated PNG where asked or where H.264
    /// cannot hold the frames), a generated one marked as `marker` says,
    /// and the record of what it plays.
    fn encode(&self, png: PngEncoding, marker: &Marker) -> Result<EncodedVideo> {
        let rate =
            super::video::FrameRate::from_fps(self.fps).map_err(super::video::video_error)?;
        let refs: Vec<&dyn Pixels> = self.frames.iter().map(|f| f.as_ref()).collect();
        let size = refs.first().map_or((0, 0), |f| f.dimensions());
        let (file, format) = match self.format {
            VideoFormat::Mp4 if super::mp4::unfit(size.0, size.1).is_none() => {
                let mut mp4 = super::mp4::encode_mp4(&refs, rate)?;
                // A generated video's XMP (IPTC's digital source type), in
                // the MP4's XMP box as in the animated PNG's text chunk.
                if let Some((_, packet, _)) = self.text.iter().find(|c| c.0 == crate::recipe::XMP) {
                    mp4 = super::mp4::with_xmp(mp4, packet)?;
                }
                (mp4, "mp4")
            }
            _ => {
                let shared = self.input.as_ref().and_then(|i| i.apng(png).ok());
                let apng = match shared {
                    Some(bytes) => bytes.to_vec(),
                    None => super::video::encode_apng(&refs, rate, png, &self.text)?,
                };
                (apng, "png")
            }
        };
        let frames = refs.len() as u32;
        let fps = (rate.fps() * 1000.0).round() / 1000.0;
        let duration = f64::from(frames) * f64::from(rate.den) / f64::from(rate.num);
        let video = crate::event::Video {
            frames,
            fps,
            fps_from: self.fps_from.clone(),
            duration_s: (duration * 1000.0).round() / 1000.0,
        };
        let file = match &self.made_by {
            Some(m) => mark_video(file, format, m, &self.text, png, marker),
            None => Encoded::plain(file),
        };
        Ok((file, format, video, size))
    }
}

/// An encoded image on its way to the media store.
struct Stored {
    marks: Option<crate::event::Marks>,
    video: Option<crate::event::Video>,
    digest: String,
    file: Vec<u8>,
    format: &'static str,
    width: u32,
    height: u32,
    slot: Arc<Slot>,
}

/// Threads that write and rename media files (and fsync them, per file).
/// I/O waits on the disk, not the CPU: with storage on threads of its own,
/// the encoders keep every core busy while several writes are in flight.
const STORE_THREADS: usize = 4;

/// Handle to the background threads of one run.
pub(crate) struct Writer {
    jobs: SyncSender<Job>,
    cmds: SyncSender<Cmd>,
    threads: Vec<JoinHandle<()>>,
    error: Arc<Mutex<Option<WriteError>>>,
    waits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the encoder pool and the appender for the run at `dir`.
    /// `next_seq` is the sequence number of the next record.
    pub(crate) fn start(
        dir: PathBuf,
        log: EventLog,
        next_seq: u64,
        capacity: usize,
        encoders: usize,
        (png, marker): (PngEncoding, Marker),
        sync: SyncMode,
    ) -> Writer {
        let barriers: Option<Barriers> = match sync {
            SyncMode::File => None,
            SyncMode::Group => Some((Box::new(SyncFs::new(&dir)), Box::new(SyncFs::new(&dir)))),
        };
        Writer::start_with(
            dir,
            log,
            next_seq,
            (capacity, encoders),
            (png, marker),
            barriers,
        )
    }

    /// [`Writer::start`] with the barriers that make stored media durable
    /// (`None`: each file is synced as it is stored).
    fn start_with(
        dir: PathBuf,
        log: EventLog,
        next_seq: u64,
        (capacity, encoders): (usize, usize),
        (png, marker): (PngEncoding, Marker),
        barriers: Option<Barriers>,
    ) -> Writer {
        let (placer, barrier) = match barriers {
            Some((p, a)) => (Some(p), Some(a)),
            None => (None, None),
        };
        let (jobs, job_rx) = sync_channel::<Job>(capacity.max(1));
        let (cmds, cmd_rx) = sync_channel::<Cmd>(CMD_QUEUE.max(capacity * 4 + 16));
        // Encoded files wait here for a storage thread: bounded, so at most
        // this many PNGs are held in memory besides those being written.
        let (stores, store_rx) = sync_channel::<Stored>(STORE_THREADS * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let store_rx = Arc::new(Mutex::new(store_rx));
        let error = Arc::new(Mutex::new(None));
        let mut threads = Vec::new();
        for i in 0..encoders.max(1) {
            let rx = Arc::clone(&job_rx);
            let tx = stores.clone();
            let marker = marker.clone();
            let spawn = std::thread::Builder::new()
                .name(format!("difflog-encode-{i}"))
                .spawn(move || encoder_loop(&rx, &tx, png, &marker));
            if let Ok(h) = spawn {
                threads.push(h);
            }
        }
        drop(stores);
        // With group syncs, staged files wait here for the placer.
        let place = placer.map(|barrier| {
            let (tx, rx) = sync_channel::<Placing>(PLACE_BATCH);
            let spawn = std::thread::Builder::new()
                .name("difflog-place".into())
                .spawn(move || place_loop(&rx, barrier));
            if let Ok(h) = spawn {
                threads.push(h);
            }
            tx
        });
        for i in 0..STORE_THREADS {
            let rx = Arc::clone(&store_rx);
            let dir = dir.clone();
            let place = place.clone();
            let spawn = std::thread::Builder::new()
                .name(format!("difflog-store-{i}"))
                .spawn(move || store_loop(&rx, &dir, place.as_ref()));
            if let Ok(h) = spawn {
                threads.push(h);
            }
        }
        drop(place);
        let err = Arc::clone(&error);
        let appender = Appender {
            log,
            seq: next_seq,
            buf: Vec::new(),
            needs_sync: false,
            barrier,
            unsynced: false,
            dir: dir.clone(),
            folders: Default::default(),
            failed_calls: HashMap::new(),
            error: err,
            dead: false,
        };
        if let Ok(h) = std::thread::Builder::new()
            .name("difflog-append".into())
            .spawn(move || appender.run(cmd_rx))
        {
            threads.push(h);
        }
        Writer {
            jobs,
            cmds,
            threads,
            error,
            waits: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues an image for encoding; the slot will hold where it was stored.
    pub(crate) fn encode(&self, image: Arc<dyn Pixels>) -> Result<Arc<Slot>, WriteError> {
        self.queue(JobImage::Pixels(image))
    }

    /// Queues a generated image for encoding with its recipe (and marks).
    pub(crate) fn encode_generated(&self, g: Generated) -> Result<Arc<Slot>, WriteError> {
        self.queue(JobImage::Generated(g))
    }

    /// Queues an image file's bytes (`format`, its extension; `width` ×
    /// `height`) to be stored as they are.
    pub(crate) fn store_encoded(
        &self,
        file: Vec<u8>,
        format: &'static str,
        size: (u32, u32),
    ) -> Result<Arc<Slot>, WriteError> {
        self.queue(JobImage::Encoded(file, format, size))
    }

    /// Queues a video's frames to be encoded as one animated PNG.
    pub(crate) fn encode_video(&self, v: VideoFrames) -> Result<Arc<Slot>, WriteError> {
        self.queue(JobImage::Video(v))
    }

    fn queue(&self, what: JobImage) -> Result<Arc<Slot>, WriteError> {
        let slot = Slot::new();
        let job = Job {
            what,
            slot: Arc::clone(&slot),
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                self.jobs.send(job).map_err(|_| self.gone())?;
            }
            Err(TrySendError::Disconnected(_)) => return Err(self.gone()),
        }
        Ok(slot)
    }

    /// Queues a command for the appender.
    pub(crate) fn send(&self, cmd: Cmd) -> Result<(), WriteError> {
        match self.cmds.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(cmd)) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                self.cmds.send(cmd).map_err(|_| self.gone())
            }
            Err(TrySendError::Disconnected(_)) => Err(self.gone()),
        }
    }

    /// Waits until everything queued so far is written and synced.
    pub(crate) fn flush(&self) -> Result<(), WriteError> {
        let (tx, rx) = sync_channel(1);
        self.send(Cmd::Flush(tx))?;
        rx.recv().map_err(|_| self.gone())?
    }

    /// How many times a caller had to wait for room in a queue.
    pub(crate) fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Drains the queues, stops the threads and reports the first error.
    pub(crate) fn close(self) -> Result<(), WriteError> {
        let Writer {
            jobs,
            cmds,
            threads,
            error,
            ..
        } = self;
        drop(jobs);
        drop(cmds);
        for t in threads {
            if t.join().is_err() {
                set_error(&error, WriteError::Panicked);
            }
        }
        let e = error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match e {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn gone(&self) -> WriteError {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(WriteError::Stopped)
    }
}

fn set_error(error: &Mutex<Option<WriteError>>, e: WriteError) {
    let mut g = error.lock().unwrap_or_else(|p| p.into_inner());
    if g.is_none() {
        *g = Some(e);
    }
}

/// Encoders yield the CPU to the program that records (its pipeline, the
/// caller's thread handing over the next image): on Linux each encoder
/// thread runs at nice 10. Elsewhere they run at the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with `who` 0 changes only the calling thread's
    // nice value on Linux; it takes no pointers.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

fn encoder_loop(
    rx: &Mutex<Receiver<Job>>,
    out: &SyncSender<Stored>,
    png: PngEncoding,
    marker: &Marker,
) {
    lower_priority();
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        let Ok(job) = job else { return };
        let mut video = None;
        let encoded = match job.what {
            JobImage::Pixels(image) => encode_png_using(image.as_ref(), &[], png)
                .map(|png| (Encoded::plain(png), "png", image.dimensions())),
            JobImage::Generated(g) => {
                encode_generated(&g, png, marker).map(|e| (e, "png", g.image.dimensions()))
            }
            JobImage::Encoded(file, format, size) => Ok((Encoded::plain(file), format, size)),
            JobImage::Video(v) => v.encode(png, marker).map(|(file, format, v, size)| {
                video = Some(v);
                (file, format, size)
            }),
        };
        match encoded {
            Ok((
                Encoded {
                    file,
                    marks,
                    sha256,
                },
                format,
                (width, height),
            )) => {
                // Signing hashes the file on its way (see `marks`); the
                // suite's debug builds check that it is the file's hash.
                let digest = sha256.map_or_else(|| sha256_hex(&file), |d| hex(&d));
                debug_assert_eq!(digest, sha256_hex(&file));
                let stored = Stored {
                    marks,
                    video,
                    digest,
                    file,
                    format,
                    width,
                    height,
                    slot: job.slot,
                };
                if let Err(e) = out.send(stored) {
                    e.0.slot.fill(Err(Err(WriteError::StorageStopped)));
                }
            }
            Err(e) => job.slot.fill(Err(Ok(Arc::new(e)))),
        }
    }
}

/// Stores each encoded file: durably, or (given the placer) under a
/// temporary name, handed on to the placer.
fn store_loop(
    rx: &Mutex<Receiver<Stored>>,
    dir: &std::path::Path,
    place: Option<&SyncSender<Placing>>,
) {
    loop {
        let item = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        let Ok(item) = item else { return };
        let (digest, bytes, slot) = (&item.digest, &item.file, item.slot);
        let file = (&bytes[..], item.format);
        let (marks, video) = (item.marks, item.video);
        let Some(place) = place else {
            let stored = store_file(dir, digest, file, (item.width, item.height))
                .map(|m| StoredMedia { marks, video, ..m });
            slot.fill(stored.map_err(|e| Ok(Arc::new(e))));
            continue;
        };
        let size = (item.width, item.height);
        match stage_file(dir, digest, file, size, SyncMode::Group) {
            Ok(mut staged) => {
                staged.media.marks = marks;
                staged.media.video = video;
                if let Err(e) = place.send(Placing { staged, slot }) {
                    e.0.staged.discard();
                    e.0.slot.fill(Err(Err(WriteError::StorageStopped)));
                }
            }
            Err(e) => slot.fill(Err(Ok(Arc::new(e)))),
        }
    }
}

/// A file under its temporary name, waiting for the placer.
struct Placing {
    staged: Staged,
    slot: Arc<Slot>,
}

/// The placer's barriers and the appender's, in that order.
type Barriers = (Box<dyn Barrier>, Box<dyn Barrier>);

/// Commands the appender may fall behind by before a caller waits. They
/// are small (the pixels wait in the bounded job queue): room for the
/// appender to wait for a batch the placer gathers without holding the
/// caller up — with room for 80, the caller waited, and recording took
/// ~2.8× encode + write with batches gathered for 60 ms.
const CMD_QUEUE: usize = 1024;

/// Most files one barrier of the placer covers.
const PLACE_BATCH: usize = 256;

/// Least time between two barriers of the placer.
const PLACE_GAP: Duration = Duration::from_millis(20);

/// Group syncs: takes every staged file waiting, makes all of them durable
/// with one barrier, then renames each into place and fills its slot.
/// While the barrier runs, the next batch gathers. (The renames become
/// durable at the appender's barrier, before any record names them.)
fn place_loop(rx: &Receiver<Placing>, mut barrier: Box<dyn Barrier>) {
    let mut last = Instant::now() - PLACE_GAP;
    loop {
        let Ok(first) = rx.recv() else { return };
        let mut batch = vec![first];
        // Gather until PLACE_GAP after the last barrier: a barrier has a
        // fixed cost, so one for each file would cost almost what an fsync
        // each did.
        let until = last + PLACE_GAP;
        while batch.len() < PLACE_BATCH {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let new: Vec<PathBuf> = batch
            .iter()
            .filter_map(|p| p.staged.tmp_path().map(PathBuf::from))
            .collect();
        let synced = if new.is_empty() {
            Ok(())
        } else {
            barrier.make_durable(&new)
        };
        last = Instant::now();
        match synced {
            Ok(()) => {
                for p in batch {
                    p.slot.fill(p.staged.place().map_err(|e| Ok(Arc::new(e))));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for p in batch {
                    p.staged.discard();
                    p.slot.fill(Err(Ok(Arc::clone(&e))));
                }
            }
        }
    }
}

/// Bytes of records the appender buffers before it writes them whatever
/// else is pending.
const FULL_BUFFER: usize = 1 << 16;

struct Appender {
    log: EventLog,
    seq: u64,
    buf: Vec<u8>,
    needs_sync: bool,
    /// Makes stored media durable before records name them; `None` when
    /// each file was synced as it was stored.
    barrier: Option<Box<dyn Barrier>>,
    /// Whether `buf` holds records naming media the barrier has not yet
    /// covered.
    unsynced: bool,
    /// The run directory.
    dir: PathBuf,
    /// The media folders of those media (whose renames the barrier makes
    /// durable).
    folders: std::collections::BTreeSet<PathBuf>,
    /// Calls whose media could not be stored, with the first error.
    failed_calls: HashMap<u32, String>,
    error: Arc<Mutex<Option<WriteError>>>,
    /// Set after a log write failed: appending more could corrupt the log.
    dead: bool,
}

impl Appender {
    fn run(mut self, rx: Receiver<Cmd>) {
        loop {
            let cmd = match rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => {
                    self.commit(true);
                    match rx.recv() {
                        Ok(c) => c,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            self.handle(cmd);
        }
        self.commit(true);
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Event { ts, event } => {
                let event = match *event {
                    Event::CallFinished(f) => Event::CallFinished(self.override_failed(f)),
                    Event::RunFinished(f) => Event::RunFinished(self.override_run(f)),
                    e => e,
                };
                if matches!(event, Event::CallFinished(_) | Event::RunFinished(_)) {
                    self.needs_sync = true;
                }
                self.push(&ts, &event);
            }
            Cmd::Media {
                ts,
                key,
                caption,
                call,
                slot,
            } => match self.wait(&slot) {
                Ok(m) => {
                    self.named(&m.path);
                    let ev = Event::Media(MediaEvent {
                        key,
                        digest: m.digest,
                        path: m.path,
                        bytes: m.bytes,
                        format: m.format.into(),
                        width: m.width,
                        height: m.height,
                        caption,
                        call,
                        provenance: m.marks,
                        video: m.video,
                    });
                    self.push(&ts, &ev);
                }
                Err(e) => {
                    let e = match e {
                        Ok(source) => WriteError::Store { key, source },
                        Err(gone) => gone,
                    };
                    if let Some(c) = call {
                        self.failed_calls.entry(c).or_insert_with(|| e.to_string());
                    }
                    set_error(&self.error, e);
                }
            },
            Cmd::Row {
                ts,
                call,
                table,
                index,
                cells,
            } => {
                let mut out = Vec::with_capacity(cells.len());
                for c in cells {
                    out.push(match c {
                        PendingCell::Ready(c) => c,
                        PendingCell::Image { column, slot } => match self.wait(&slot) {
                            Ok(m) => {
                                self.named(&m.path);
                                Cell::Image {
                                    column,
                                    digest: m.digest,
                                    path: m.path,
                                    width: m.width,
                                    height: m.height,
                                    video: m.video,
                                }
                            }
                            Err(_) => Cell::Null { column },
                        },
                    });
                }
                let ev = Event::Row(crate::event::RowEvent {
                    call,
                    table,
                    index,
                    cells: out,
                });
                self.push(&ts, &ev);
            }
            Cmd::Flush(reply) => {
                self.needs_sync = true;
                self.commit(true);
                let e = self.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let _ = reply.send(match e {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
            }
        }
    }

    /// A call whose media failed is recorded as failed, whatever it returned.
    fn override_failed(&self, mut f: CallFinished) -> CallFinished {
        if let Some(why) = self.failed_calls.get(&f.call) {
            f.status = CallStatus::Error;
            f.error = Some(match f.error {
                Some(own) => format!("{own}; recording: {why}"),
                None => format!("recording failed: {why}"),
            });
        }
        f
    }

    /// A run whose recording failed ends as failed, naming the first error.
    fn override_run(&self, mut f: RunFinished) -> RunFinished {
        if let Some(why) = self.error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            f.status = RunStatus::Failed;
            f.error = Some(match f.error {
                Some(own) => format!("{own}; recording: {why}"),
                None => format!("recording failed: {why}"),
            });
        }
        f
    }

    /// Notes that `buf` names the media file at `path` (relative to the run).
    fn named(&mut self, path: &str) {
        if self.barrier.is_some() {
            self.unsynced = true;
            if let Some(folder) = self.dir.join(path).parent() {
                self.folders.insert(folder.to_path_buf());
            }
        }
    }

    fn wait(&mut self, slot: &Slot) -> Result<StoredMedia, SlotError> {
        if !slot.is_ready() {
            // Put what is ready on disk before blocking on the encoder.
            self.commit(false);
        }
        slot.wait()
    }

    fn push(&mut self, ts: &str, event: &Event) {
        if self.dead {
            return;
        }
        match encode_record(self.seq, ts, event) {
            Ok(line) => {
                self.buf.extend_from_slice(&line);
                self.seq += 1;
            }
            Err(e) => set_error(
                &self.error,
                WriteError::Event {
                    kind: event.kind(),
                    source: Arc::new(e),
                },
            ),
        }
        if self.buf.len() >= FULL_BUFFER {
            self.commit(false);
        }
    }

    /// Writes the buffered records; syncs if asked and something needs it.
    /// Records naming media not yet durable wait for a commit that syncs
    /// (or a full buffer), and go out after one barrier for all of them.
    fn commit(&mut self, sync: bool) {
        if self.dead {
            return;
        }
        if !self.buf.is_empty() && self.unsynced {
            if !sync && self.buf.len() < FULL_BUFFER {
                return;
            }
            if let Some(b) = self.barrier.as_mut() {
                let folders: Vec<PathBuf> = std::mem::take(&mut self.folders).into_iter().collect();
                if let Err(e) = b.make_durable(&folders) {
                    self.dead = true;
                    set_error(&self.error, WriteError::Log(Arc::new(e)));
                    return;
                }
            }
            self.unsynced = false;
        }
        if !self.buf.is_empty() {
            if let Err(e) = self.log.append(&self.buf) {
                self.dead = true;
                set_error(&self.error, WriteError::Log(Arc::new(e)));
                return;
            }
            self.buf.clear();
        }
        if sync && self.needs_sync {
            if let Err(e) = self.log.sync() {
                self.dead = true;
                set_error(&self.error, WriteError::Log(Arc::new(e)));
                return;
            }
            self.needs_sync = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CallFinished, CallStatus};
    use crate::format::{EVENTS_LOG, MEDIA_DIR, TMP_PREFIX};
    use image::RgbImage;
    use std::collections::HashSet;
    use std::path::Path;

    /// What a barrier saw when it ran.
    struct Seen {
        /// The placer's barrier (else the appender's).
        placer: bool,
        /// Digests of the files under temporary names.
        staged: HashSet<String>,
        /// Digests of the files under their final names.
        placed: HashSet<String>,
        /// Digests the event log names.
        named: HashSet<String>,
    }

    /// A barrier that notes what the media store and the log hold each
    /// time it runs.
    struct Probe {
        dir: PathBuf,
        placer: bool,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    /// (staged, placed) digests in the media store.
    fn media_files(dir: &Path) -> (HashSet<String>, HashSet<String>) {
        let (mut staged, mut placed) = (HashSet::new(), HashSet::new());
        for shard in std::fs::read_dir(dir.join(MEDIA_DIR)).into_iter().flatten() {
            let Ok(shard) = shard else { continue };
            for f in std::fs::read_dir(shard.path()).into_iter().flatten() {
                let Ok(f) = f else { continue };
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
                    staged.insert(rest.split('-').next().unwrap_or("").to_string());
                } else if let Some(digest) = name.strip_suffix(".png") {
                    placed.insert(digest.to_string());
                }
            }
        }
        (staged, placed)
    }

    fn named_in_log(dir: &Path, files: &HashSet<String>) -> HashSet<String> {
        let log = std::fs::read_to_string(dir.join(EVENTS_LOG)).unwrap_or_default();
        files
            .iter()
            .filter(|d| log.contains(d.as_str()))
            .cloned()
            .collect()
    }

    impl Barrier for Probe {
        fn make_durable(&mut self, _paths: &[PathBuf]) -> Result<()> {
            let (staged, placed) = media_files(&self.dir);
            let named = named_in_log(&self.dir, &placed);
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Seen {
                    placer: self.placer,
                    staged,
                    placed,
                    named,
                });
            Ok(())
        }
    }

    /// Issue 38: with group syncs a file gets its final name only after a
    /// barrier that ran while it was under its temporary name (a final name
    /// only ever holds durable bytes), and no record names a file before a
    /// barrier that ran after its rename; at the end every image is named.
    #[test]
    fn group_syncs_keep_the_crash_rule() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let log = EventLog::create(&dir).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let probe = |placer| {
            Box::new(Probe {
                dir: dir.clone(),
                placer,
                seen: Arc::clone(&seen),
            }) as Box<dyn Barrier>
        };
        let w = Writer::start_with(
            dir.clone(),
            log,
            1,
            (4, 2),
            (PngEncoding::Compact, None),
            Some((probe(true), probe(false))),
        );
        let images = 60u32;
        for i in 0..images {
            let img = RgbImage::from_fn(24, 24, |x, y| {
                image::Rgb([(x * 9 + i) as u8, (y * 7) as u8, (i * 31) as u8])
            });
            let slot = w.encode(Arc::new(img)).unwrap();
            w.send(Cmd::Media {
                ts: "t".into(),
                key: format!("image-{i}"),
                caption: None,
                call: Some(i + 1),
                slot,
            })
            .unwrap();
            w.send(Cmd::Event {
                ts: "t".into(),
                event: Box::new(Event::CallFinished(CallFinished {
                    call: i + 1,
                    status: CallStatus::Ok,
                    error: None,
                    images: 1,
                    timings_ms: Default::default(),
                })),
            })
            .unwrap();
            if i % 20 == 19 {
                w.flush().unwrap();
            }
        }
        w.close().unwrap();

        let seen = seen.lock().unwrap();
        assert!(seen.iter().any(|s| s.placer) && seen.iter().any(|s| !s.placer));
        // Staged at a placer's barrier; placed as of a barrier (any).
        let (mut synced, mut placed_then): (HashSet<String>, HashSet<String>) = Default::default();
        for (k, s) in seen.iter().enumerate() {
            let unsynced: Vec<_> = s.placed.difference(&synced).collect();
            assert!(
                unsynced.is_empty(),
                "barrier {k}: {unsynced:?} got their final names before a barrier covered their bytes"
            );
            let early: Vec<_> = s.named.difference(&placed_then).collect();
            assert!(
                early.is_empty(),
                "barrier {k}: the log named {early:?} before a barrier covered their renames"
            );
            if s.placer {
                synced.extend(s.staged.iter().cloned());
            }
            placed_then.extend(s.placed.iter().cloned());
        }
        let (staged, placed) = media_files(&dir);
        assert!(staged.is_empty(), "temporary files left: {staged:?}");
        assert_eq!(placed.len(), images as usize);
        assert!(placed.is_subset(&synced));
        assert_eq!(
            named_in_log(&dir, &placed),
            placed,
            "every image is recorded"
        );
        assert!(
            placed.is_subset(&placed_then),
            "the last renames were not covered"
        );
    }
}
