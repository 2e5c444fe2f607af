//! `difflog pack` / `unpack`: identical round trip, truncated and hostile
//! archives refused without leaving anything half-unpacked.

mod common;

use common::{Req, TestPipeline};
use difflog::pack::{pack, unpack};
use difflog::verify::verify_run;
use difflog::{Init, Run};
use std::path::{Path, PathBuf};

fn record(root: &Path, n: u64) -> PathBuf {
    let run = Run::create(Init::project("pack").root(root)).unwrap();
    let mut p = TestPipeline::new();
    for i in 0..n {
        run.record(&mut p, &Req::new(&["a", "b"], i * 10)).unwrap();
    }
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    dir
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn pack_then_unpack_gives_identical_verified_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let a = record(&tmp.path().join("runs"), 3);
    let b = record(&tmp.path().join("runs"), 1);
    let archive = tmp.path().join("runs.tar.zst");
    let s = pack(&[tmp.path().join("runs")], &archive).unwrap();
    assert_eq!(s.runs.len(), 2);
    let out = unpack(&archive, &tmp.path().join("elsewhere")).unwrap();
    assert_eq!(out.len(), 2);
    for (orig, copy) in [(&a, &out[0]), (&b, &out[1])] {
        assert_eq!(orig.file_name(), copy.file_name());
        assert_eq!(tree(orig), tree(copy), "{}", orig.display());
        assert!(!verify_run(copy).damaged());
    }
    // Unpacking again over identical runs is fine; the archive is deterministic.
    unpack(&archive, &tmp.path().join("elsewhere")).unwrap();
    let again = tmp.path().join("again.tar.zst");
    pack(&[tmp.path().join("runs")], &again).unwrap();
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn truncated_or_hostile_archives_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    record(&tmp.path().join("runs"), 2);
    let archive = tmp.path().join("runs.tar.zst");
    pack(&[tmp.path().join("runs")], &archive).unwrap();
    let bytes = std::fs::read(&archive).unwrap();
    for cut in [10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 7] {
        let t = tmp.path().join(format!("cut{cut}.tar.zst"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let dest = tmp.path().join(format!("dest{cut}"));
        let e = unpack(&t, &dest).unwrap_err().to_string();
        assert!(e.contains(&t.display().to_string()), "{e}");
        let left: Vec<_> = std::fs::read_dir(&dest).unwrap().collect();
        assert!(left.is_empty(), "a truncated archive left {left:?}");
    }
    // An entry that climbs out of its run.
    let evil = tmp.path().join("evil.tar.zst");
    {
        let f = std::fs::File::create(&evil).unwrap();
        let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
        let mut t = tar::Builder::new(enc);
        let mut h = tar::Header::new_old();
        let name = b"../escaped.txt";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(3);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        t.append(&h, &b"bad"[..]).unwrap();
        t.into_inner().unwrap();
    }
    let e = unpack(&evil, &tmp.path().join("d"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside its run"), "{e}");
    assert!(!tmp.path().join("escaped.txt").exists());
}

#[test]
fn live_or_damaged_runs_are_not_packed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("p").root(tmp.path().join("live"))).unwrap();
    run.flush().unwrap();
    let e = pack(&[tmp.path().join("live")], &tmp.path().join("x.tar.zst"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("still being written"), "{e}");
    run.finish().unwrap();
    let dir = record(&tmp.path().join("bad"), 1);
    let v = difflog::read::RunDir::open(&dir).unwrap().view();
    std::fs::write(dir.join(&v.media[0].path), b"tampered").unwrap();
    let e = pack(&[tmp.path().join("bad")], &tmp.path().join("y.tar.zst"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("damaged, not packed"), "{e}");
    assert!(!tmp.path().join("y.tar.zst").exists());
    // Same size, other bytes: caught by the digest check while packing.
    let dir = record(&tmp.path().join("subtle"), 1);
    let v = difflog::read::RunDir::open(&dir).unwrap().view();
    let victim = dir.join(&v.media[0].path);
    let n = std::fs::metadata(&victim).unwrap().len() as usize;
    std::fs::write(&victim, vec![7u8; n]).unwrap();
    let e = pack(&[tmp.path().join("subtle")], &tmp.path().join("z.tar.zst"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match its name"), "{e}");
    assert!(!tmp.path().join("z.tar.zst").exists());
}

/// Issue 21 (2): a *complete* archive made by other tools (`tar | zstd`)
/// holding a run whose PNG was replaced by other bytes of the same size is
/// refused by `unpack`, names the damage (not a note, not `Some(..)`), and
/// leaves nothing in the destination.
#[test]
fn unpack_refuses_a_complete_archive_holding_a_damaged_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = record(&tmp.path().join("runs"), 2);
    let v = difflog::read::RunDir::open(&dir).unwrap().view();
    let victim = dir.join(&v.media[0].path);
    let n = std::fs::metadata(&victim).unwrap().len() as usize;
    std::fs::write(&victim, vec![7u8; n]).unwrap();
    // A stray temporary file first in the run gives verify a mere note too.
    std::fs::write(dir.join("media").join(".tmp-left-by-a-crash"), b"x").unwrap();
    let archive = tmp.path().join("hand-made.tar.zst");
    {
        let f = std::fs::File::create(&archive).unwrap();
        let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
        let mut t = tar::Builder::new(enc);
        t.append_dir_all(dir.file_name().unwrap(), &dir).unwrap();
        t.into_inner().unwrap();
    }
    let dest = tmp.path().join("dest");
    let e = unpack(&archive, &dest).unwrap_err().to_string();
    assert!(e.contains("damaged in the archive"), "{e}");
    assert!(e.contains("SHA-256") || e.contains("digest"), "{e}");
    assert!(!e.contains("Some("), "{e}");
    let left: Vec<_> = std::fs::read_dir(&dest).unwrap().flatten().collect();
    assert!(left.is_empty(), "a damaged archive left {left:?}");
}
