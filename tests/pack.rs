//! `difflog pack` / `unpack`: identical round trip, truncated and hostile
//! archives refused without leaving anything half-unpacked.

mod common;

use common::{Req, TestPipeline};
use difflog::pack::{pack, unpack};
use difflog::verify::verify_run;
use difflog::{Init, Run};
use std::io::Read;
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
    let err = unpack(&evil, &tmp.path().join("d")).unwrap_err();
    // The error names the archive and its entry as such (issue 31), not
    // only in its words.
    match &err {
        difflog::Error::Archive { path, entry, .. } => {
            assert_eq!(path, &evil);
            assert_eq!(
                entry.as_deref(),
                Some(std::path::Path::new("../escaped.txt"))
            );
        }
        other => panic!("not an archive error: {other:?}"),
    }
    assert_eq!(err.code(), "archive");
    let e = err.to_string();
    assert!(e.contains("outside its run"), "{e}");
    assert!(e.contains("entry ../escaped.txt"), "{e}");
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
    let archive = tmp.path().join("hand-made.tar.zst");
    common::tar_zst_by_hand(&dir, &archive);
    let dest = tmp.path().join("dest");
    let e = unpack(&archive, &dest).unwrap_err().to_string();
    assert!(e.contains("damaged in the archive"), "{e}");
    assert!(e.contains("SHA-256") || e.contains("digest"), "{e}");
    assert!(!e.contains("Some("), "{e}");
    let left: Vec<_> = std::fs::read_dir(&dest).unwrap().flatten().collect();
    assert!(left.is_empty(), "a damaged archive left {left:?}");
}

/// Issue 13 (12): `pack -o` pointing into a run (its log, its run.json, a
/// new file in it) or at a run directory of the root is refused before
/// anything is written; the run stays intact.
#[test]
fn pack_refuses_an_output_inside_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let dir = record(&root, 2);
    let log = std::fs::read(dir.join("events.log")).unwrap();
    for out in [
        dir.join("events.log"),
        dir.join("run.json"),
        dir.join("media/new.tar.zst"),
        dir.clone(),
    ] {
        for what in [&root, &dir] {
            let e = pack(std::slice::from_ref(what), &out)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("inside run") || e.contains("is a run directory"),
                "{}: {e}",
                out.display()
            );
        }
    }
    assert_eq!(std::fs::read(dir.join("events.log")).unwrap(), log);
    assert!(!verify_run(&dir).damaged());
}

/// Issue 13 (14, 15): unpack checks every destination before moving any
/// run in; a missing archive creates nothing; an entry that is not a file of
/// a run is refused; an entry larger than its kind of file can be (a small
/// archive that would unpack into gigabytes) is refused; staging folders of
/// an unpack killed mid-way are cleaned on the next unpack.
#[test]
fn unpack_moves_nothing_on_a_conflict_and_refuses_what_no_run_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let a = record(&root, 1);
    let b = record(&root, 1);
    let archive = tmp.path().join("two.tar.zst");
    pack(std::slice::from_ref(&root), &archive).unwrap();
    // The destination already holds a *different* run with b's id.
    let dest = tmp.path().join("dest");
    let other = dest.join(b.file_name().unwrap());
    common::copy_dir(&b, &other);
    std::fs::write(other.join("run.json"), b"{}").unwrap();
    let e = unpack(&archive, &dest).unwrap_err().to_string();
    assert!(e.contains("a different run with this id"), "{e}");
    assert!(
        !dest.join(a.file_name().unwrap()).exists(),
        "the first run was moved in before the conflict was found"
    );

    let missing = tmp.path().join("missing.tar.zst");
    let dest2 = tmp.path().join("dest2");
    assert!(unpack(&missing, &dest2).is_err());
    assert!(!dest2.exists(), "a missing archive created the destination");

    // A stray file and an oversized event log (a zstd bomb: 2 GB of zeros
    // compress to a few hundred kB).
    let run_name = a.file_name().unwrap().to_str().unwrap().to_string();
    for (entry, size) in [
        (format!("{run_name}/notes.txt"), 4u64),
        (format!("{run_name}/run.json"), 2 << 20),
    ] {
        let evil = tmp.path().join("evil.tar.zst");
        {
            let f = std::fs::File::create(&evil).unwrap();
            let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
            let mut t = tar::Builder::new(enc);
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, &entry, std::io::repeat(b' ').take(size))
                .unwrap();
            t.into_inner().unwrap();
        }
        let d = tmp.path().join("dest3");
        let e = unpack(&evil, &d).unwrap_err().to_string();
        assert!(
            e.contains("not a file of a run") || e.contains("larger than"),
            "{entry}: {e}"
        );
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "{entry}");
    }

    // A staging folder left by a killed unpack, two hours old.
    let dest4 = tmp.path().join("dest4");
    let stale = dest4.join(".unpack-left-behind");
    std::fs::create_dir_all(stale.join("x")).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    unpack(&archive, &dest4).unwrap();
    assert!(!stale.exists(), "a stale staging folder was left");
}

/// Issue 13 (15): a full disk while unpacking is reported as the
/// destination's problem, not as a damaged archive, and leaves nothing.
#[test]
fn unpack_onto_a_full_disk_names_the_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let run = Run::create(Init::project("big").root(&root)).unwrap();
    let mut p = TestPipeline::new();
    p.size = 256;
    for i in 0..8 {
        run.record(&mut p, &Req::new(&["a", "b"], i * 10)).unwrap();
    }
    run.finish().unwrap();
    let archive = tmp.path().join("big.tar.zst");
    pack(&[root], &archive).unwrap();
    let Some(disk) = common::SmallDisk::mount(&tmp.path().join("small"), "256k") else {
        eprintln!("SKIPPED unpack_onto_a_full_disk_names_the_destination: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dest = disk.0.join("dest");
    let e = unpack(&archive, &dest).unwrap_err().to_string();
    assert!(
        e.contains(&dest.display().to_string()) && e.contains("destination"),
        "{e}"
    );
    assert!(!e.contains("not a complete difflog archive"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&dest).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}
