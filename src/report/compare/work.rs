//! The pixel work of a comparison: which thumbnails and differences are
//! not cached yet, made grid row by grid row in parallel so that each image
//! is decoded once, and the cache of difference figures beside the page.

use super::grid::Grid;
use super::{CompareOptions, Item, Runs};
use crate::error::{Error, IoContext, Result};
use crate::format::is_digest;
use crate::read::{par_map, run_file};
use crate::report::diff::{difference, heat_png, Figures};
use crate::report::html::relative;
use crate::report::thumbs::{decode, needs_thumb, write_atomic, Thumbs};
use image::RgbaImage;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The cache of differences beside the page: `diffs/index.json`, pair key
/// → figures (or `null` for images of different sizes).
type DiffCache = BTreeMap<String, Option<Figures>>;

pub(super) fn pair_key(a: &str, b: &str) -> String {
    format!("{a}-{b}")
}

/// What has to be decoded, shrunk and compared, grouped by grid row so
/// that each image is decoded once.
pub(super) struct Work {
    pub(super) out: PathBuf,
    pub(super) thumbs: Thumbs,
    /// Per grid row: (item, make its thumbnail, compare it with the row's baseline).
    pub(super) tasks: Vec<Vec<(usize, bool, bool)>>,
    /// Decodable path of every item (None: refused, with the reason).
    pub(super) paths: Vec<std::result::Result<PathBuf, String>>,
    pub(super) full: Vec<String>,
    pub(super) cache: DiffCache,
    pub(super) baseline_of: Vec<Option<usize>>,
    pub(super) digests: Vec<String>,
}

/// What the work produced.
pub(super) struct Done {
    pub(super) thumbs_made: usize,
    pub(super) diffs_made: usize,
    pub(super) diffs: DiffCache,
    pub(super) thumb_ok: HashSet<String>,
    pub(super) unreadable: HashMap<usize, String>,
}

impl Work {
    pub(super) fn plan(
        items: &[Item],
        runs: &Runs,
        grid: &Grid,
        out: &Path,
        opts: &CompareOptions,
    ) -> Result<Work> {
        let thumbs = Thumbs::new(out);
        let cache = load_cache(&out.join("diffs").join("index.json"));
        let mut paths = Vec::with_capacity(items.len());
        let mut full = Vec::with_capacity(items.len());
        for it in items {
            let run = &runs.dirs[it.run];
            match run_file(&run.path, &it.rel) {
                Ok(p) => {
                    full.push(if opts.self_contained && is_digest(&it.digest) {
                        let dst = out.join("images").join(format!("{}.png", it.digest));
                        if !dst.is_file() {
                            std::fs::create_dir_all(out.join("images"))
                                .ctx(out, "create images folder")?;
                            std::fs::copy(&p, &dst).ctx(&p, "copy image beside the page")?;
                        }
                        format!("images/{}.png", it.digest)
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
        let mut baseline_of = vec![None; items.len()];
        let mut claimed = HashSet::new();
        let mut tasks = Vec::with_capacity(grid.rows.len());
        for row in &grid.rows {
            let mut task = Vec::new();
            for &k in row.cells.iter().flatten() {
                let it = &items[k];
                let thumb = needs_thumb(it.width, it.height)
                    && is_digest(&it.digest)
                    && claimed.insert(it.digest.clone())
                    && !thumbs.cached(&it.digest);
                let mut diff = false;
                if let Some(b) = row.baseline.filter(|&b| b != k) {
                    baseline_of[k] = Some(b);
                    let (da, db) = (&items[b].digest, &it.digest);
                    diff = da != db && !cache_has(&cache, out, da, db);
                }
                task.push((k, thumb, diff));
            }
            if let Some(b) = row.baseline {
                if task.iter().any(|t| t.2) {
                    if let Some(t) = task.iter_mut().find(|t| t.0 == b) {
                        t.2 = true; // decode the baseline for its row's differences
                    }
                }
            }
            task.retain(|t| t.1 || t.2);
            tasks.push(task);
        }
        Ok(Work {
            out: out.to_path_buf(),
            thumbs,
            tasks,
            paths,
            full,
            cache,
            baseline_of,
            digests: items.iter().map(|it| it.digest.clone()).collect(),
        })
    }

    /// Decodes, shrinks and compares, grid rows in parallel.
    pub(super) fn run(&self, problems: &mut Vec<String>) -> Done {
        let results = par_map(&self.tasks, |task| self.run_row(task));
        let mut done = Done {
            thumbs_made: 0,
            diffs_made: 0,
            diffs: self.cache.clone(),
            thumb_ok: HashSet::new(),
            unreadable: HashMap::new(),
        };
        for (k, p) in self.paths.iter().enumerate() {
            if let Err(why) = p {
                problems.push(why.clone());
                done.unreadable.insert(k, why.clone());
            }
        }
        for r in results {
            done.thumbs_made += r.thumbs.len();
            done.thumb_ok.extend(r.thumbs);
            done.diffs_made += r.diffs.len();
            done.diffs.extend(r.diffs);
            for (k, why) in r.unreadable {
                problems.push(why.clone());
                done.unreadable.insert(k, why);
            }
        }
        done
    }

    fn run_row(&self, task: &[(usize, bool, bool)]) -> RowResult {
        let mut res = RowResult::default();
        let mut decoded: HashMap<usize, RgbaImage> = HashMap::new();
        for &(k, thumb, _) in task {
            let img = match &self.paths[k] {
                Ok(p) => decode(p).map_err(|e| format!("{}: {e}", p.display())),
                Err(_) => continue, // reported once, by `run`
            };
            match img {
                Ok(img) => {
                    if thumb {
                        match self.thumbs.write(&self.digests[k], &img) {
                            Ok(()) => res.thumbs.push(self.digests[k].clone()),
                            Err(e) => res.unreadable.push((k, e.to_string())),
                        }
                    }
                    decoded.insert(k, img);
                }
                Err(why) => res.unreadable.push((k, why)),
            }
        }
        for &(k, _, diff) in task {
            let Some(b) = self.baseline_of[k].filter(|_| diff) else {
                continue;
            };
            let (Some(a), Some(bi)) = (decoded.get(&b), decoded.get(&k)) else {
                continue;
            };
            let key = pair_key(&self.digests[b], &self.digests[k]);
            let figures = match difference(a, bi) {
                Some((f, heat)) => {
                    let path = self.out.join("diffs").join(format!("{key}.png"));
                    let written = heat_png(&heat, a.width(), a.height()).and_then(|png| {
                        std::fs::create_dir_all(self.out.join("diffs"))
                            .ctx(&self.out, "create differences folder")?;
                        write_atomic(&path, &png)
                    });
                    if let Err(e) = written {
                        res.unreadable.push((k, e.to_string()));
                        continue;
                    }
                    Some(f)
                }
                None => None,
            };
            res.diffs.push((key, figures));
        }
        res
    }

    pub(super) fn save_cache(&self, done: &Done) -> Result<()> {
        if done.diffs_made == 0 {
            return Ok(());
        }
        let dir = self.out.join("diffs");
        std::fs::create_dir_all(&dir).ctx(&dir, "create differences folder")?;
        let json = serde_json::to_vec(&done.diffs).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&dir.join("index.json"), &json)
    }
}

#[derive(Default)]
struct RowResult {
    thumbs: Vec<String>,
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

fn cache_has(cache: &DiffCache, out: &Path, a: &str, b: &str) -> bool {
    let key = pair_key(a, b);
    match cache.get(&key) {
        Some(Some(_)) => out.join("diffs").join(format!("{key}.png")).is_file(),
        Some(None) => true,
        None => false,
    }
}
