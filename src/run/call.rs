//! A call recorded step by step — its start, each row, its end — for a
//! pipeline that does not run inside [`Run::record`]: one in another
//! language (the Python package records diffusers' calls through this), or
//! a program that drives its own generation loop. `Run::record` records
//! through it too, so a call's records come out the same whoever drives it.

use super::marks::{Generated, InputPixels, InputVideo, MadeBy, Origin, Parent};
use super::media::Pixels;
use super::writer::{Cmd, PendingCell, Slot, VideoFrames};
use super::{ms, Run};
use crate::error::Result;
use crate::event::{CallFinished, CallStarted, CallStatus, Cell, Event};
use crate::format::names;
use crate::format::now_rfc3339;
use crate::pipeline::PipelineInfo;
use crate::recipe::TextChunk;
use serde_json::{Map, Number, Value};
use std::borrow::Borrow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One cell of a call's table row.
pub enum RowValue {
    /// Text (a prompt).
    Text(String),
    /// A number (a seed keeps its 64 bits).
    Number(Number),
    /// No value (no negative prompt was given).
    Null,
    /// An image the call was given (a source image, a mask, a control
    /// image): stored once per call however many rows show the same `Arc`,
    /// under `<column>/Pipeline-Call-N`.
    Input(Arc<dyn Pixels>),
    /// A generated image, stored under `<column>/Pipeline-Call-N` with its
    /// caption (the prompt) and the text chunks its PNG carries (its recipe).
    Generated {
        /// The pixels (shared: the caller may keep them).
        image: Arc<dyn Pixels>,
        /// The media entry's caption.
        caption: Option<String>,
        /// PNG text chunks (see [`crate::recipe::chunks`]).
        text: Vec<TextChunk>,
    },
    /// An image file (PNG, JPEG or WebP) kept byte for byte (an imported
    /// image: the metadata its tool wrote stays in it), stored like a
    /// generated image.
    Encoded {
        /// The file's bytes.
        file: Vec<u8>,
        /// Its format, as its media file's extension: one of
        /// [`crate::event::MEDIA_FORMATS`].
        format: &'static str,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The media entry's caption.
        caption: Option<String>,
    },
    /// A generated video: its frames, encoded off the caller's thread as
    /// one animated PNG and stored under `<column>/Pipeline-Call-N` with
    /// its frame count, rate and duration.
    Video {
        /// The frames in order, all the first's size (shared: the caller
        /// may keep them).
        frames: Vec<Arc<dyn Pixels>>,
        /// Frames a second they play at, as the call stated it (a rate
        /// no video can have fails the call's recording, naming it).
        fps: f64,
        /// Where the rate came from, in words (see
        /// [`crate::event::Video::fps_from`]).
        fps_from: Option<String>,
        /// The media entry's caption.
        caption: Option<String>,
        /// Whether the call made it (counted among its outputs) or was
        /// given it (a video-to-video call's input video).
        generated: bool,
        /// PNG text chunks its file carries (a generated video's XMP
        /// packet, [`crate::recipe::xmp_chunk`]).
        text: Vec<TextChunk>,
    },
}

/// What a call is, known when it begins.
pub struct CallStart {
    /// The pipeline that runs it (recorded once per run; the same `Arc`
    /// again is known without comparing its contents).
    pub info: Arc<PipelineInfo>,
    /// Every argument, defaults filled in.
    pub params: Map<String, Value>,
    /// The seed of every image, in row order (empty when unknown).
    pub seeds: Vec<u64>,
    /// The table's columns, in order.
    pub columns: Vec<String>,
}

/// A call being recorded: [`OpenCall::row`] for each image, then
/// [`OpenCall::finish`]. Recording problems never stop the caller: the run
/// keeps the first one and reports it from `flush`/`finish`; `row` also
/// returns it so a caller can say so at once.
pub struct OpenCall<R: Borrow<Run>> {
    run: R,
    call: u32,
    started: Instant,
    saving: Duration,
    images: u32,
    inputs: Vec<(Arc<dyn Pixels>, Arc<Slot>)>,
    input_file: Option<Arc<super::marks::InputFile>>,
    /// The call's input images as generated images' parents and masks,
    /// each shared by the rows made from the same pixels (its PNG made
    /// once).
    parents: Vec<Arc<InputPixels>>,
    /// The videos the call was given, each shared by the rows that have it
    /// (its animated PNG made once, for its file and the manifests).
    input_videos: Vec<Arc<InputVideo>>,
    /// What the call's images' manifests state about it.
    origin: Arc<Origin>,
}

impl<R: Borrow<Run>> OpenCall<R> {
    /// Records the pipeline (the first time the run sees it) and the call's
    /// start. On a run that records nothing, every method does nothing.
    pub fn begin(run: R, start: CallStart) -> OpenCall<R> {
        let mut call = 0;
        let r: &Run = run.borrow();
        let mut origin = Origin {
            run_id: String::new(),
            call: 0,
            model_id: String::new(),
            weights_digest: None,
            source_type: crate::recipe::source_type(&start.params),
        };
        if let Some(a) = &r.active {
            origin.run_id.clone_from(&a.id);
            origin.model_id.clone_from(&start.info.model_id);
            origin.weights_digest.clone_from(&start.info.weights_digest);
            let pipeline = r.pipeline_index(a, start.info);
            call = a.next_call.fetch_add(1, Ordering::Relaxed);
            r.emit_quiet(Event::CallStarted(CallStarted {
                call,
                stage: names::stage(call),
                pipeline,
                params: start.params,
                seeds: start.seeds,
                columns: start.columns,
            }));
            origin.call = call;
        }
        OpenCall {
            run,
            call,
            started: Instant::now(),
            saving: Duration::ZERO,
            images: 0,
            inputs: Vec::new(),
            input_file: None,
            parents: Vec::new(),
            input_videos: Vec::new(),
            origin: Arc::new(origin),
        }
    }

    /// The call's number in its run (0 when nothing is recorded).
    pub fn call(&self) -> u32 {
        self.call
    }

    /// The run's id, or `None` when nothing is recorded.
    pub fn run_id(&self) -> Option<&str> {
        self.run.borrow().id()
    }

    /// Records row `index` of the call's table (`cells` by column; a column
    /// the call declared but `cells` lacks is simply absent from the row).
    /// Images are encoded off this thread; this waits only when the
    /// writer's queue is full.
    pub fn row(&mut self, index: u32, cells: Vec<(String, RowValue)>) -> Result<()> {
        let t = Instant::now();
        // Counted as handed over, whether or not they could be stored.
        let generated = cells
            .iter()
            .filter(|(_, v)| {
                matches!(
                    v,
                    RowValue::Generated { .. }
                        | RowValue::Encoded { .. }
                        | RowValue::Video {
                            generated: true,
                            ..
                        }
                )
            })
            .count();
        self.images += generated as u32;
        let result = self.row_inner(index, cells);
        self.saving += t.elapsed();
        result
    }

    /// Names the file the call's input image was read from: its
    /// generated images' manifests keep it (and its own credentials) as
    /// their parent ingredient.
    pub(crate) fn set_input_file(&mut self, file: Option<Arc<super::marks::InputFile>>) {
        self.input_file = file;
    }

    fn row_inner(&mut self, index: u32, cells: Vec<(String, RowValue)>) -> Result<()> {
        let call = self.call;
        let inputs = &mut self.inputs;
        let input_file = self.input_file.clone();
        let parents = &mut self.parents;
        let input_videos = &mut self.input_videos;
        let origin = &self.origin;
        let Some(a) = &self.run.borrow().active else {
            return Ok(());
        };
        let video_format = a.video;
        a.with_writer(|w| {
            let ts = now_rfc3339();
            // An image the call made: its media entry, then its cell.
            let output = |column: String, slot: Arc<Slot>, caption: Option<String>| {
                w.send(Cmd::Media {
                    ts: ts.clone(),
                    key: names::media_key(&column, &names::stage(call)),
                    caption,
                    call: Some(call),
                    slot: Arc::clone(&slot),
                })
                .map(|()| PendingCell::Image { column, slot })
            };
            // A generated image's parent: the row's input image, if any
            // (its file, when the caller named it); and its mask.
            // (`Input-Image` from difflog's pipelines, `Source-Image` W&B's
            // name that the Python package records it under.)
            let mut parent = None;
            let mut mask = None;
            // A generated video's parent: the row's input video, if any.
            let mut parent_video = None;
            for (_, v) in &cells {
                if let RowValue::Video {
                    frames,
                    fps,
                    text,
                    generated: false,
                    ..
                } = v
                {
                    let input = shared_video(input_videos, frames, *fps, text);
                    parent_video.get_or_insert(input);
                }
            }
            for (column, v) in &cells {
                let RowValue::Input(img) = v else { continue };
                if column == names::INPUT_IMAGE || column == names::SOURCE_IMAGE {
                    parent = Some(match &input_file {
                        Some(f) => Parent::File(Arc::clone(f)),
                        None => Parent::Pixels(shared(parents, img)),
                    });
                } else if column == names::MASK_IMAGE {
                    mask = Some(shared(parents, img));
                }
            }
            let mut out = Vec::with_capacity(cells.len());
            for (column, value) in cells {
                let cell = match value {
                    RowValue::Text(value) => PendingCell::Ready(Cell::Text { column, value }),
                    RowValue::Number(value) => PendingCell::Ready(Cell::Number { column, value }),
                    RowValue::Null => PendingCell::Ready(Cell::Null { column }),
                    RowValue::Input(img) => {
                        let known = inputs.iter().find(|(i, _)| same_pixels(i, &img));
                        let slot = match known {
                            Some((_, slot)) => Arc::clone(slot),
                            None => {
                                let slot = w.encode(Arc::clone(&img))?;
                                w.send(Cmd::Media {
                                    ts: ts.clone(),
                                    key: names::media_key(&column, &names::stage(call)),
                                    caption: None,
                                    call: Some(call),
                                    slot: Arc::clone(&slot),
                                })?;
                                inputs.push((img, Arc::clone(&slot)));
                                slot
                            }
                        };
                        PendingCell::Image { column, slot }
                    }
                    RowValue::Generated {
                        image,
                        caption,
                        text,
                    } => {
                        let slot = w.encode_generated(Generated {
                            image,
                            text,
                            origin: Arc::clone(origin),
                            row: index,
                            parent: parent.clone(),
                            mask: mask.clone(),
                        })?;
                        output(column, slot, caption)?
                    }
                    RowValue::Encoded {
                        file,
                        format,
                        width,
                        height,
                        caption,
                    } => {
                        let slot = w.store_encoded(file, format, (width, height))?;
                        output(column, slot, caption)?
                    }
                    RowValue::Video {
                        frames,
                        fps,
                        fps_from,
                        caption,
                        generated,
                        text,
                    } => {
                        // What the call was given is kept exact (remaking
                        // the call needs its very frames); what it made, as
                        // the run keeps videos.
                        let format = if generated {
                            video_format
                        } else {
                            super::video::VideoFormat::Apng
                        };
                        let made_by = generated.then(|| MadeBy {
                            origin: Arc::clone(origin),
                            row: index,
                            parent: parent_video.clone(),
                        });
                        let input =
                            (!generated).then(|| shared_video(input_videos, &frames, fps, &text));
                        let slot = w.encode_video(VideoFrames {
                            frames,
                            fps,
                            fps_from,
                            text,
                            format,
                            made_by,
                            input,
                        })?;
                        output(column, slot, caption)?
                    }
                };
                out.push(cell);
            }
            w.send(Cmd::Row {
                ts,
                call,
                table: names::table(&names::stage(call)),
                index,
                cells: out,
            })
        })
    }

    /// Records how the call ended: `error` is the failure's text (`None`:
    /// it succeeded); `timings` are phases in milliseconds, to which
    /// `saving` (time spent in [`OpenCall::row`]) and `total` (since
    /// [`OpenCall::begin`]) are added unless given.
    pub fn finish(self, error: Option<String>, mut timings: Map<String, Value>) {
        if self.run.borrow().active.is_none() {
            return;
        }
        timings.entry("saving").or_insert_with(|| ms(self.saving));
        timings
            .entry("total")
            .or_insert_with(|| ms(self.started.elapsed()));
        let status = match error {
            None => CallStatus::Ok,
            Some(_) => CallStatus::Error,
        };
        self.run
            .borrow()
            .emit_quiet(Event::CallFinished(CallFinished {
                call: self.call,
                status,
                error,
                images: self.images,
                timings_ms: timings,
            }));
    }
}

/// Whether two pixels are the same object (the vtable is not compared):
/// how a call's input given to several rows is known again.
fn same_pixels(a: &Arc<dyn Pixels>, b: &Arc<dyn Pixels>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// The call's shared input video of these frames, made the first time
/// they are seen.
fn shared_video(
    known: &mut Vec<Arc<InputVideo>>,
    frames: &[Arc<dyn Pixels>],
    fps: f64,
    text: &[crate::recipe::TextChunk],
) -> Arc<InputVideo> {
    if let Some(v) = known.iter().find(|v| v.is(frames)) {
        return Arc::clone(v);
    }
    let v = Arc::new(InputVideo::new(frames.to_vec(), fps, text.to_vec()));
    known.push(Arc::clone(&v));
    v
}

/// The call's shared input for these pixels, made the first time they are
/// seen.
fn shared(known: &mut Vec<Arc<InputPixels>>, img: &Arc<dyn Pixels>) -> Arc<InputPixels> {
    if let Some(p) = known.iter().find(|p| same_pixels(&p.image, img)) {
        return Arc::clone(p);
    }
    let p = Arc::new(InputPixels::new(Arc::clone(img)));
    known.push(Arc::clone(&p));
    p
}
