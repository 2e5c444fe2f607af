//! The pixel work of a comparison: which thumbnails and differences are
//! not cached yet, made grid row by grid row in parallel so that each image
//! is decoded once, and the cache of difference figures beside the page.

use super::grid::Grid;
use super::{CompareOptions, Item, Runs};
use crate::error::{Error, IoContext, Result};
use crate::format::is_digest;
use crate::read::{par_map, run_file};
use crate::report::diff::{difference_into, heat_png_into, Figures};
use crate::report::html::relative;
use crate::report::thumbs::{
    encode_rgb_into, needs_thumb, shown_size, shrink, write_atomic, Decoder, THUMB,
};
use image::RgbImage;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The cache of differences beside the page: `diffs/index.json`, pair key
/// → figures (or `null` for images of different sizes).
type DiffCache = BTreeMap<String, Option<Figures>>;

/// Where a heat-map strip lies, below the page's folder (one folder per
/// first two hex digits, as thumbnails).
pub(super) fn strip_rel(key: &str) -> String {
    format!("diffs/{}/{key}.png", &key[..2])
}

/// The cache key of a pair's figures.
pub(super) fn pair_key(a: &str, b: &str) -> String {
    format!("{a}-{b}")
}

/// The heat maps of one grid row, stacked top to bottom in column order in
/// one PNG (one file per row, not one per pair: creating ten thousand
/// small files costs more than computing them).
pub(super) struct Strip {
    /// SHA-256 of the baseline's and the members' digests: the file name.
    pub(super) key: String,
    /// The row's baseline.
    pub(super) base: usize,
    /// The images compared with it, in column order.
    pub(super) members: Vec<usize>,
    /// Whether the strip and every member's figures are cached.
    pub(super) cached: bool,
}

/// The thumbnails of one grid row side by side in one PNG, one
/// [`THUMB`]-wide slot per column (for the same reason as [`Strip`]).
pub(super) struct ThumbStrip {
    /// SHA-256 of the row's digests, column by column: the file name.
    pub(super) key: String,
    /// (column, item) of each image larger than a thumbnail.
    pub(super) slots: Vec<(usize, usize)>,
    /// Number of columns (slots) of the strip.
    pub(super) cols: usize,
    /// Whether the strip is already made.
    pub(super) cached: bool,
}

/// What one grid row needs: the images to decode, its thumbnails and its
/// strip of differences.
pub(super) struct RowTask {
    decode: Vec<usize>,
    thumbs: Option<ThumbStrip>,
    strip: Option<Strip>,
}

/// What has to be decoded, shrunk and compared, grouped by grid row so
/// that each image is decoded once.
pub(super) struct Work {
    pub(super) out: PathBuf,
    pub(super) tasks: Vec<RowTask>,
    /// Decodable path of every item (Err: refused, with the reason).
    pub(super) paths: Vec<std::result::Result<PathBuf, String>>,
    /// Each item's full-size link from the page.
    pub(super) full: Vec<String>,
    pub(super) cache: DiffCache,
    /// Each item's row baseline (none for the baseline itself).
    pub(super) baseline_of: Vec<Option<usize>>,
    /// Each strip member's place: (task index, index in the strip).
    pub(super) strip_of: HashMap<usize, (usize, usize)>,
    /// Each thumbnailed item's place: (task index, column).
    pub(super) thumb_of: HashMap<usize, (usize, usize)>,
    pub(super) digests: Vec<String>,
    /// Each item's size as its media record gives it.
    pub(super) sizes: Vec<(u32, u32)>,
}

/// The most memory one row's heat-map strip may take (one byte a pixel
/// of each member): past it, the row's differences are not drawn.
const MAX_STRIP_BYTES: usize = 256 << 20;

/// What the work produced.
pub(super) struct Done {
    pub(super) thumbs_made: usize,
    pub(super) diffs_made: usize,
    pub(super) diffs: DiffCache,
    /// Tasks (grid rows) whose thumbnail strip exists.
    pub(super) thumb_rows: HashSet<usize>,
    pub(super) unreadable: HashMap<usize, String>,
}

impl Work {
    /// Decides what is to be made, per grid row: its thumbnail strip and its
    /// strip of differences against its baseline, unless cached.
    pub(super) fn plan(
        items: &[Item],
        runs: &Runs,
        grid: &Grid,
        out: &Path,
        opts: &CompareOptions,
    ) -> Result<Work> {
        let mut cache = load_cache(&out.join("diffs").join("index.json"));
        let (paths, full) = links(items, runs, out, opts.self_contained)?;
        let mut baseline_of = vec![None; items.len()];
        let mut strip_of = HashMap::new();
        let mut thumb_of = HashMap::new();
        let mut tasks = Vec::with_capacity(grid.rows.len());
        for row in &grid.rows {
            let mut members = Vec::new();
            for &k in row.cells.iter().flatten() {
                let Some(b) = row.baseline.filter(|&b| b != k) else {
                    continue;
                };
                baseline_of[k] = Some(b);
                let (base, it) = (&items[b], &items[k]);
                if base.digest == it.digest {
                    continue; // byte-identical: nothing to compute
                }
                // An MP4 is not decoded here: no difference figures.
                if crate::report::is_mp4(&base.rel) || crate::report::is_mp4(&it.rel) {
                    continue;
                }
                if (base.width, base.height) != (it.width, it.height) {
                    cache.insert(pair_key(&base.digest, &it.digest), None);
                    continue;
                }
                strip_of.insert(k, (tasks.len(), members.len()));
                members.push(k);
            }
            let strip = row.baseline.filter(|_| !members.is_empty()).map(|b| {
                let mut names = items[b].digest.clone();
                for &m in &members {
                    names.push(',');
                    names.push_str(&items[m].digest);
                }
                let key = crate::format::sha256_hex(names.as_bytes());
                let cached = out.join(strip_rel(&key)).is_file()
                    && members.iter().all(|&m| {
                        matches!(
                            cache.get(&pair_key(&items[b].digest, &items[m].digest)),
                            Some(Some(_))
                        )
                    });
                Strip {
                    key,
                    base: b,
                    members,
                    cached,
                }
            });
            let thumbs = thumb_strip(row, items, out);
            if let Some(t) = &thumbs {
                for &(c, k) in &t.slots {
                    thumb_of.insert(k, (tasks.len(), c));
                }
            }
            let mut decode = Vec::new();
            for &k in row.cells.iter().flatten() {
                let for_thumb = thumbs
                    .as_ref()
                    .is_some_and(|t| !t.cached && t.slots.iter().any(|s| s.1 == k));
                let for_strip = strip
                    .as_ref()
                    .is_some_and(|s| !s.cached && (s.base == k || s.members.contains(&k)));
                if for_thumb || for_strip {
                    decode.push(k);
                }
            }
            tasks.push(RowTask {
                decode,
                thumbs,
                strip,
            });
        }
        Ok(Work {
            out: out.to_path_buf(),
            tasks,
            paths,
            full,
            cache,
            baseline_of,
            strip_of,
            thumb_of,
            digests: items.iter().map(|it| it.digest.clone()).collect(),
            sizes: items.iter().map(|it| (it.width, it.height)).collect(),
        })
    }

    /// The strip holding item `k`'s heat map: (link, index, count).
    pub(super) fn strip_place(&self, k: usize) -> Option<(String, usize, usize)> {
        let &(t, i) = self.strip_of.get(&k)?;
        let s = self.tasks.get(t)?.strip.as_ref()?;
        Some((strip_rel(&s.key), i, s.members.len()))
    }

    /// The thumbnail strip holding item `k`: (link, task, column).
    pub(super) fn thumb_place(&self, k: usize) -> Option<(String, usize, usize)> {
        let &(t, c) = self.thumb_of.get(&k)?;
        let s = self.tasks.get(t)?.thumbs.as_ref()?;
        Some((thumb_rel(&s.key), t, c))
    }

    /// Decodes, shrinks and compares, grid rows in parallel.
    pub(super) fn run(&self, problems: &mut Vec<String>) -> Done {
        // One part per core, each with its own buffers reused row after row.
        let indexed: Vec<(usize, &RowTask)> = self.tasks.iter().enumerate().collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts: Vec<&[(usize, &RowTask)]> = indexed
            .chunks(indexed.len().div_ceil(cores).max(1))
            .collect();
        let results: Vec<(usize, RowResult)> = par_map(&parts, |part| {
            let mut bufs = Buffers::default();
            part.iter()
                .map(|(t, task)| (*t, self.run_row(task, &mut bufs)))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let mut done = Done {
            thumbs_made: 0,
            diffs_made: 0,
            diffs: self.cache.clone(),
            thumb_rows: HashSet::new(),
            unreadable: HashMap::new(),
        };
        for (k, p) in self.paths.iter().enumerate() {
            if let Err(why) = p {
                problems.push(why.clone());
                done.unreadable.insert(k, why.clone());
            }
        }
        for (t, r) in results {
            done.thumbs_made += r.thumbs_made;
            if r.thumbs_ok {
                done.thumb_rows.insert(t);
            }
            done.diffs_made += r.diffs.len();
            done.diffs.extend(r.diffs);
            for (k, why) in r.unreadable {
                problems.push(why.clone());
                done.unreadable.insert(k, why);
            }
        }
        done
    }

    /// One grid row, image by image in column order, each decoded once into
    /// a reused buffer: its thumbnail goes into the row's thumbnail strip,
    /// its difference against the baseline into the row's heat-map strip.
    fn run_row(&self, task: &RowTask, bufs: &mut Buffers) -> RowResult {
        let mut res = RowResult::default();
        let thumbs = task.thumbs.as_ref().filter(|t| !t.cached);
        let strip = task.strip.as_ref().filter(|s| !s.cached);
        res.thumbs_ok = task.thumbs.as_ref().is_some_and(|t| t.cached);
        let Buffers {
            decoder,
            spare,
            base_pixels,
            heat,
            sheet,
            packed,
            png,
        } = bufs;
        let mut read = |k: usize, spare: Vec<u8>, res: &mut RowResult| {
            let Ok(p) = &self.paths[k] else {
                return None; // refused: reported once, by `run`
            };
            match decoder.decode_into(p, spare, self.sizes[k]) {
                Ok(img) => Some(img),
                Err(why) => {
                    res.unreadable.push((k, format!("{}: {why}", p.display())));
                    None
                }
            }
        };
        // A row whose strip would take more than MAX_STRIP_BYTES gets no
        // differences (said once per row), before anything is decoded.
        let strip = match strip {
            Some(s) => {
                let (w, h) = self.sizes[s.base];
                let need = (w as usize)
                    .saturating_mul(h as usize)
                    .saturating_mul(s.members.len());
                if need > MAX_STRIP_BYTES {
                    res.unreadable.push((
                        s.base,
                        format!(
                            "the differences of its row would take {} MiB (more than {} MiB): not drawn",
                            need >> 20,
                            MAX_STRIP_BYTES >> 20
                        ),
                    ));
                    None
                } else {
                    Some(s)
                }
            }
            None => None,
        };
        let base = strip.and_then(|s| read(s.base, std::mem::take(base_pixels), &mut res));
        let (bw, bh) = base.as_ref().map_or((0, 0), |b| b.dimensions());
        let slot = bw as usize * bh as usize;
        heat.clear();
        heat.resize(strip.map_or(0, |s| slot * s.members.len()), 0);
        if let Some(t) = thumbs {
            let mut raw = std::mem::take(sheet).into_raw();
            raw.clear();
            raw.resize(THUMB as usize * t.cols * THUMB as usize * 3, 0);
            *sheet = RgbImage::from_raw(THUMB * t.cols as u32, THUMB, raw).unwrap_or_default();
        }
        let mut made = 0;
        for &k in &task.decode {
            // The baseline is already decoded; every other image into `spare`.
            let is_base = Some(k) == strip.map(|s| s.base);
            let own = if is_base {
                None
            } else {
                match read(k, std::mem::take(spare), &mut res) {
                    Some(img) => Some(img),
                    None => continue,
                }
            };
            let Some(img) = (if is_base { base.as_ref() } else { own.as_ref() }) else {
                continue;
            };
            if let Some(t) = thumbs {
                if let Some(&(c, _)) = t.slots.iter().find(|s| s.1 == k) {
                    let (w, h) = shown_size(img.width(), img.height());
                    let x = i64::from(THUMB) * c as i64;
                    image::imageops::replace(sheet, &shrink(img, w, h), x, 0);
                    made += 1;
                }
            }
            if let (Some(s), Some(b)) = (strip, base.as_ref()) {
                if let Some(i) = s.members.iter().position(|&m| m == k) {
                    match difference_into(b, img, &mut heat[i * slot..(i + 1) * slot]) {
                        Some(f) => res
                            .diffs
                            .push((pair_key(&self.digests[s.base], &self.digests[k]), Some(f))),
                        None => res.unreadable.push((
                            k,
                            format!(
                                "its pixels are {}×{}, not the {bw}×{bh} of the row's baseline",
                                img.width(),
                                img.height()
                            ),
                        )),
                    }
                }
            }
            if let Some(img) = own {
                *spare = img.into_raw();
            }
        }
        if let Some(t) = thumbs {
            let encoded = encode_rgb_into(sheet, png).map(|()| &png[..]);
            match self.write(&thumb_rel(&t.key), encoded) {
                Ok(()) => {
                    res.thumbs_ok = true;
                    res.thumbs_made = made;
                }
                Err(e) => res
                    .unreadable
                    .extend(t.slots.first().map(|&(_, k)| (k, e.to_string()))),
            }
        }
        if let (Some(s), true) = (strip, base.is_some()) {
            let encoded = heat_png_into(heat, bw, bh * s.members.len() as u32, packed, png)
                .map(|()| &png[..]);
            if let Err(e) = self.write(&strip_rel(&s.key), encoded) {
                // Without its strip the row's figures are not kept either.
                res.diffs.clear();
                res.unreadable.push((s.base, e.to_string()));
            }
        }
        if let Some(b) = base {
            *base_pixels = b.into_raw();
        }
        res
    }

    /// Writes an encoded strip at `rel` below the page's folder.
    fn write(&self, rel: &str, png: Result<&[u8]>) -> Result<()> {
        let path = self.out.join(rel);
        let dir = path.parent().unwrap_or(&self.out);
        std::fs::create_dir_all(dir).ctx(dir, "create folder")?;
        write_atomic(&path, png?)
    }

    /// Writes the figures (old and new) beside the page for the next run.
    pub(super) fn save_cache(&self, done: &Done) -> Result<()> {
        if done.diffs_made == 0 {
            return Ok(());
        }
        let dir = self.out.join("diffs");
        std::fs::create_dir_all(&dir).ctx(&dir, "create differences folder")?;
        let json = serde_json::to_vec(&done.diffs)
            .map_err(|e| Error::encode("the comparison's JSON", e))?;
        write_atomic(&dir.join("index.json"), &json)
    }
}

/// Each item's file (checked: a regular file inside its run) and its
/// full-size link from the page; with `self_contained`, copied beside it.
#[allow(clippy::type_complexity)]
fn links(
    items: &[Item],
    runs: &Runs,
    out: &Path,
    self_contained: bool,
) -> Result<(Vec<std::result::Result<PathBuf, String>>, Vec<String>)> {
    let mut paths = Vec::with_capacity(items.len());
    let mut full = Vec::with_capacity(items.len());
    for it in items {
        let run = &runs.dirs[it.run];
        match run_file(&run.path, &it.rel) {
            Ok(p) => {
                full.push(if self_contained && is_digest(&it.digest) {
                    // The media file's own extension (checked when read).
                    let ext = it.rel.rsplit_once('.').map_or("png", |(_, e)| e);
                    let name = format!("{}.{ext}", it.digest);
                    let dst = out.join("images").join(&name);
                    if !dst.is_file() {
                        std::fs::create_dir_all(out.join("images"))
                            .ctx(out, "create images folder")?;
                        std::fs::copy(&p, &dst).ctx(&p, "copy image beside the page")?;
                    }
                    format!("images/{name}")
                } else {
                    relative(out, &p)
                });
                paths.push(Ok(p));
            }
            Err(e) => {
                // Refused (a link, a FIFO, outside the run): never linked.
                full.push(String::new());
                paths.push(Err(e.to_string()));
            }
        }
    }
    Ok((paths, full))
}

/// Where a thumbnail strip lies, below the page's folder.
pub(super) fn thumb_rel(key: &str) -> String {
    format!("thumbs/{}/{key}.png", &key[..2])
}

/// The thumbnail strip of a grid row, if any of its images is larger than
/// a thumbnail.
fn thumb_strip(row: &super::grid::GridRow, items: &[Item], out: &Path) -> Option<ThumbStrip> {
    let slots: Vec<(usize, usize)> = row
        .cells
        .iter()
        .enumerate()
        .filter_map(|(c, k)| k.map(|k| (c, k)))
        .filter(|&(_, k)| {
            needs_thumb(items[k].width, items[k].height) && !crate::report::is_mp4(&items[k].rel)
        })
        .collect();
    if slots.is_empty() {
        return None;
    }
    let names: Vec<&str> = row
        .cells
        .iter()
        .map(|k| k.map_or("-", |k| items[k].digest.as_str()))
        .collect();
    let key = crate::format::sha256_hex(format!("thumbs {THUMB}:{}", names.join(",")).as_bytes());
    let cached = out.join(thumb_rel(&key)).is_file();
    Some(ThumbStrip {
        key,
        slots,
        cols: row.cells.len(),
        cached,
    })
}

/// One worker's buffers, reused row after row: allocating megabytes per row
/// (freed and returned to the kernel each time) cost more than the work.
#[derive(Default)]
struct Buffers {
    decoder: Decoder,
    spare: Vec<u8>,
    base_pixels: Vec<u8>,
    heat: Vec<u8>,
    sheet: RgbImage,
    packed: Vec<u8>,
    png: Vec<u8>,
}

#[derive(Default)]
struct RowResult {
    thumbs_made: usize,
    thumbs_ok: bool,
    diffs: Vec<(String, Option<Figures>)>,
    unreadable: Vec<(usize, String)>,
}

/// The cached figures, if the file is ours and well formed (anything else is
/// recomputed, never trusted).
fn load_cache(path: &Path) -> DiffCache {
    let Ok(bytes) = crate::read::read_regular(path, 64 * 1024 * 1024) else {
        return DiffCache::new();
    };
    let cache: DiffCache = serde_json::from_slice(&bytes).unwrap_or_default();
    cache
        .into_iter()
        .filter(|(k, _)| {
            k.split_once('-')
                .is_some_and(|(a, b)| is_digest(a) && is_digest(b))
        })
        .collect()
}
