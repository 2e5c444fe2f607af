"""difflog's benchmark and fault harness: every figure the project claims,
measured side by side in one run, printed as one Markdown table and written
as JSON. Run by scripts/bench, which builds the binaries, prepares the
Python environments and starts the MLflow server.

    python3 benches/harness.py MLFLOW_URL BIN_DIR WORK_DIR [--quick] [--out FILE]

Sections: 1 recorder vs W&B offline autolog, 2 recorder vs the encode limit,
3 sync vs MLflow's client and the keep-alive limit, 4 scale (ls, status,
watch start-up), 5 crash and fault figures (from the test suite's own kill
and fault tests, run with larger counts), 6 fuzzing (cargo fuzz), 7 compare,
8 max-rate, 9 Python autolog, 10 fleet (N uploaders against one MLflow
server, proxied and with an S3 artifact store), 11 generate (recording vs
recording disabled for each tiny model family), 12 PNG encodings and sync
modes, 13 provenance (recording with a signed manifest and a watermark
against recording without).
"""
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

url, bin_dir, work = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
quick = "--quick" in args
out_path = args[args.index("--out") + 1] if "--out" in args else os.path.join(work, "bench-results.json")
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
difflog = os.path.join(bin_dir, "difflog")
sync = os.path.join(bin_dir, "difflog-sync")
bench_py = os.path.join(repo, ".venv-bench", "bin", "python")

results = {"mode": "quick" if quick else "full", "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
           "sections": {}}
rows = []  # (section, figure, measured, target, met)
failed = []


def row(section, figure, measured, target="", met=None):
    if isinstance(met, str):
        rows.append((section, figure, measured, target, met))
        return
    rows.append((section, figure, measured, target, "" if met is None else ("yes" if met else "NO")))


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def section(name):
    def wrap(f):
        t = time.perf_counter()
        try:
            results["sections"][name] = f()
        except Exception as e:  # a failed section is reported, the others still run
            failed.append(name)
            results["sections"][name] = {"error": str(e)[-2000:]}
            row(name, "FAILED", str(e).splitlines()[-1][:120] if str(e) else type(e).__name__)
        results["sections"].setdefault(name, {})["section_s"] = round(time.perf_counter() - t, 1)
        return f
    return wrap


def figures(text, tag):
    m = re.search(tag + r" (.*)", text)
    if not m:
        raise RuntimeError(f"no {tag} line in the test output")
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def dir_stats(path):
    size, files = 0, 0
    for d, _, fs in os.walk(path):
        for n in fs:
            size += os.path.getsize(os.path.join(d, n))
            files += 1
    return size, files


N = 40 if quick else 200


@section("1-2 recorder")
def recorder():
    root = os.path.join(work, "rec")
    rec = json.loads(run([difflog, "bench", "record", "--calls", str(N), "--size", "512", "--root", root,
                          "--json"]).stdout)
    wb = json.loads(run([bench_py, os.path.join(repo, "benches", "wandb_offline.py"), rec["run_dir"],
                         os.path.join(work, "wandb")]).stdout.strip().splitlines()[-1])
    d_bytes, d_files = dir_stats(rec["run_dir"])
    ratio = rec["record_s"] / wb["log_to_finish_s"]
    s = "1 recorder vs W&B offline"
    row(s, f"{N} calls of one 512² image: difflog record, s", round(rec["record_s"], 3))
    row(s, "W&B offline autolog-style logging (first log → finish), s", round(wb["log_to_finish_s"], 3))
    row(s, "W&B including wandb.init, s", round(wb["init_to_finish_s"], 3))
    row(s, "difflog / W&B", f"{ratio:.4f} (1/{1 / ratio:.0f})", "≤ 1/40", ratio <= 1 / 40)
    row(s, "disk: difflog / W&B, MB", f"{d_bytes / 1e6:.1f} / {wb['bytes'] / 1e6:.1f}")
    row(s, "files: difflog / W&B", f"{d_files} / {wb['files']}")
    s = "2 recorder vs encode limit"
    row(s, "images/s", round(rec["images_per_s"], 1), "≥ 300", rec["images_per_s"] >= 300)
    row(s, "blocked p99, ms", round(rec["blocked_p99_ms"], 3), "≤ 1", rec["blocked_p99_ms"] <= 1)
    row(s, "recording / encode-only", round(rec["ratio_to_encode_only"], 2), "≤ 1.4",
        rec["ratio_to_encode_only"] <= 1.4)
    row(s, "recording / (encode + plain write)", round(rec["ratio_to_encode_and_write"], 2))
    return {"difflog": {k: v for k, v in rec.items() if k != "run_dir"}, "wandb": wb,
            "difflog_bytes": d_bytes, "difflog_files": d_files, "ratio_to_wandb": ratio}


@section("3 sync")
def sync_bench():
    out = run(["python3", os.path.join(repo, "benches", "sync_bench.py"), url, bin_dir,
               os.path.join(work, "sync")] + (["--quick"] if quick else [])).stdout
    f = json.loads(out.strip().splitlines()[-1])
    s = "3 sync vs MLflow"
    row(s, f"{f['images']} PNGs + tables ({f['megabytes']} MB): difflog-sync / Python client / 4-conn limit, s",
        f"{f['sync_s']} / {f['python_client_s']} / {f['keepalive_limit_s']}")
    row(s, "difflog-sync / MLflow Python client", f["ratio_to_python_client"], "≤ 0.4",
        f["ratio_to_python_client"] <= 0.4)
    row(s, "difflog-sync / 4 keep-alive connections", f["ratio_to_limit"], "≤ 1.25", f["ratio_to_limit"] <= 1.25)
    row(s, f"same, median of {f['rounds']} per-round ratios", f["ratio_to_limit_median_round"])
    row(s, f"verify (read back) / upload, median of {f['rounds']} rounds", f["ratio_verify_to_upload_median_round"],
        "≤ 2", f["ratio_verify_to_upload_median_round"] <= 2)
    # W&B's read-back against its upload: the emulator (no W&B server runs
    # here), release build, artifact files stored without the test delay.
    rounds = 3 if quick else 5
    p = run(["cargo", "test", "--release", "--locked", "-q", "--test", "sync_wandb",
             "bench_wandb_verify_against_upload", "--", "--ignored", "--nocapture"],
            env=dict(os.environ, DIFFLOG_BENCH_ROUNDS=str(rounds)), cwd=repo, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"W&B verify bench failed:\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
    w = figures(p.stderr + p.stdout, "WANDB-VERIFY-FIGURES")
    f["wandb_verify"] = w
    row(s, f"W&B (emulator) {int(w['images'])} PNGs ({w['megabytes']} MB): upload / verify, s",
        f"{w['upload_s']:.3f} / {w['verify_s']:.3f}")
    row(s, f"W&B (emulator) verify / upload, median of {int(w['rounds'])} rounds", w["ratio_median_round"],
        "≤ 2", w["ratio_median_round"] <= 2)
    row(s, "watch latency p95, s", f["watch_latency_p95_s"], "≤ 1", f["watch_latency_p95_s"] <= 1)
    row(s, f"idle daemon CPU over {f['idle_window_s']} s, % / RSS, MB", f"{f['idle_cpu_percent']} / {f['rss_mb']}",
        "≤ 0.1 / ≤ 50", f["idle_cpu_percent"] <= 0.1 and f["rss_mb"] <= 50)
    return f


def timed(cmd, repeat=3):
    best, rss = None, 0
    for _ in range(repeat):
        t = time.perf_counter()
        p = run(["/usr/bin/time", "-f", "%M"] + cmd)
        dt = time.perf_counter() - t
        rss = max(rss, int(p.stderr.strip().splitlines()[-1]) / 1024)
        best = dt if best is None else min(best, dt)
    return best, rss


@section("4 scale")
def scale():
    runs = 2000 if quick else 10000
    root = os.path.join(work, "scale")
    gen = json.loads(run([difflog, "bench", "scale", "--root", root, "--runs", str(runs),
                          "--events-per-run", "100"]).stdout)
    # status keeps each run's counts in its cache (here, in the work
    # folder) once the run's files are 2 s old; --fresh reads every log.
    os.environ["DIFFLOG_CACHE"] = os.path.join(work, "cache")
    time.sleep(2.1)
    ls_s, ls_rss = timed([difflog, "ls", root])
    st_fresh_s, _ = timed([sync, "status", root, "--fresh"])
    st_s, st_rss = timed([sync, "status", root])
    s = "4 scale"
    row(s, f"root: {gen['runs']} runs, {gen['events']} events ({gen['log_bytes'] / 1e6:.0f} MB of logs), generated in s",
        round(gen["seconds"], 2))
    row(s, "difflog ls, s (RSS MB)", f"{ls_s:.2f} ({ls_rss:.0f})", "≤ 1", ls_s <= 1)
    row(s, "difflog-sync status, every log read (--fresh, or a first look), s", f"{st_fresh_s:.2f}")
    row(s, "difflog-sync status, counts cached, s (RSS MB)", f"{st_s:.2f} ({st_rss:.0f})", "≤ 1", st_s <= 1)
    # The same fleet uploaded to two targets (the state as uploads leave it).
    root2 = os.path.join(work, "scale-2-targets")
    gen2 = json.loads(run([difflog, "bench", "scale", "--root", root2, "--runs", str(runs),
                           "--events-per-run", "100", "--targets", "2"]).stdout)
    time.sleep(2.1)
    st2f_s, _ = timed([sync, "status", root2, "--fresh"])
    st2_s, st2_rss = timed([sync, "status", root2])
    st2j_s, _ = timed([sync, "status", root2, "--json"])
    row(s, f"difflog-sync status, {runs} runs × 2 targets, every log read (--fresh), s", f"{st2f_s:.2f}")
    row(s, f"difflog-sync status, {runs} runs × 2 targets, counts cached, s (RSS MB); --json, s",
        f"{st2_s:.2f} ({st2_rss:.0f}); {st2j_s:.2f}", "≤ 1", max(st2_s, st2j_s) <= 1)
    shutil.rmtree(root2, ignore_errors=True)
    # watch start-up over runs that are already uploaded: the daemon opens
    # every run, finds nothing due and goes idle. Full mode uploads the whole
    # root first (~0.1 s per run here, ~16 min for 10,000); quick mode a
    # subset, scaled per run to 10,000 (its row says so).
    if quick:
        sub_n = 60
        sub = os.path.join(work, "scale-uploaded")
        os.makedirs(sub)
        for i in range(sub_n):
            name = f"20260101T000000.000Z-{i:06x}"
            os.rename(os.path.join(root, name), os.path.join(sub, name))
    else:
        sub_n, sub = runs, root
    t = time.perf_counter()
    run([sync, "upload", sub, "--to", "mlflow+" + url])
    upload_s = time.perf_counter() - t
    env = dict(os.environ, DIFFLOG_LOG="info")
    t = time.perf_counter()
    d = subprocess.Popen([sync, "watch", sub, "--to", "mlflow+" + url], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=env)
    seen = 0
    for line in d.stderr:
        if re.search(r"calls \d+/\d+ status", line):
            seen += 1
            if seen == sub_n:
                break
    startup = time.perf_counter() - t
    with open(f"/proc/{d.pid}/status") as f:
        rss = next(int(x.split()[1]) / 1024 for x in f if x.startswith("VmRSS:"))
    d.terminate()
    d.wait()
    per_run = startup / sub_n
    row(s, f"watch start-up to idle over {sub_n} uploaded runs, s (RSS MB)", f"{startup:.2f} ({rss:.0f})",
        "≤ 5" if sub_n >= 10000 else "", startup <= 5 if sub_n >= 10000 else None)
    if sub_n < 10000:
        row(s, "watch start-up per run, ms → 10,000 runs (extrapolated), s",
            f"{per_run * 1000:.2f} → {per_run * 10000:.1f}", "≤ 5",
            "yes (extrapolated)" if per_run * 10000 <= 5 else "NO (extrapolated)")
    row(s, f"difflog-sync upload of those {sub_n} runs to MLflow, s per run", round(upload_s / sub_n, 3))
    return {"generated": gen, "ls_s": ls_s, "ls_rss_mb": ls_rss, "status_s": st_s, "status_rss_mb": st_rss,
            "status_fresh_s": st_fresh_s, "status_2_targets_fresh_s": st2f_s, "status_2_targets_s": st2_s, "status_2_targets_json_s": st2j_s, "state_seconds": gen2["state_seconds"],
            "watch_runs": sub_n, "watch_startup_s": startup, "watch_rss_mb": rss,
            "watch_startup_10k_extrapolated_s": per_run * 10000, "upload_s_per_run": upload_s / sub_n}


def cargo_test(test, name, env, ignored=False):
    e = dict(os.environ, DIFFLOG_TEST_MLFLOW_URL=url, **env)
    p = run(["cargo", "test", "--locked", "-q", "--test", test, name, "--", "--nocapture", "--test-threads=1"]
            + (["--ignored"] if ignored else []),
            env=e, cwd=repo, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"cargo test --test {test} {name} failed:\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
    return p.stderr + p.stdout


@section("5 crash and faults")
def faults():
    s = "5 crash and faults"
    kills = 40 if quick else 200
    c = figures(cargo_test("crash", "sigkill_at_random_instants", {"DIFFLOG_CRASH_KILLS": str(kills)}),
                "CRASH-FIGURES")
    row(s, f"recorder SIGKILLs: unreadable runs / incomplete finished calls ({int(c['finished_calls_checked'])} checked)",
        f"{int(c['unreadable'])} / {int(c['incomplete_calls'])} of {int(c['kills'])} kills", "0 / 0",
        c["unreadable"] == 0 and c["incomplete_calls"] == 0)
    dk = 20 if quick else 100
    k = figures(cargo_test("sync_mlflow", "sigkill_of_the_uploader", {"DIFFLOG_SYNC_KILLS": str(dk)}),
                "SYNC-KILL-FIGURES")
    row(s, f"daemon SIGKILLs mid-upload ({int(k['mid_upload'])} of {int(k['kills'])} mid-way): missing / duplicated",
        f"{int(k['missing'])} / {int(k['duplicated'])}", "0 / 0", k["missing"] == 0 and k["duplicated"] == 0)
    o = figures(cargo_test("sync_mlflow", "watch_rides_out", {}), "OUTAGE-FIGURES")
    row(s, "30 s outage: calls delivered / duplicated / connection attempts per min / backlog after recovery, s",
        f"{int(o['delivered_calls'])} of 4 / {int(o['duplicated'])} / {o['attempts_per_min']:.0f} / {o['recovered_s']:.1f}")
    n = figures(cargo_test("sync_netns", "link_up_to_first_request_after_a_long_outage",
                           {"DIFFLOG_NETNS_OUTAGE_S": "60" if quick else "300"}, ignored=True), "NETWATCH-FIGURES")
    row(s, f"link down {n['outage_s']:.0f} s, then up: first request at the server after, s: "
           "watch / the backoff alone",
        f"{n['events_s']:.2f} / {n['backoff_s']:.1f}", "≤ 1", n["events_s"] <= 1)
    return {"recorder_kills": c, "daemon_kills": k, "outage": o, "netwatch": n}


@section("6 fuzz")
def fuzz():
    s = "6 fuzz"
    secs = 20 if quick else 60
    out = {}
    for target in ["event_log", "run_json", "unpack"]:
        p = run(["scripts/fuzz", target, str(secs)], cwd=repo, check=False)
        text = p.stdout + p.stderr
        m = re.findall(r"number_of_executed_units:\s+(\d+)", text)
        execs = int(m[-1]) if m else 0
        crashed = p.returncode != 0
        out[target] = {"executions": execs, "seconds": secs, "crashed": crashed, "exit": p.returncode}
        if crashed and execs == 0:
            raise RuntimeError(f"fuzz {target} did not run:\n{text[-1500:]}")
        row(s, f"{target}: executions in {secs} s / crashes", f"{execs} / {1 if crashed else 0}", "0 crashes",
            not crashed)
    return out


@section("7 compare")
def compare_bench():
    # issue 18: 50 runs x 200 images, nothing cached <= 10 s, cached <= 1 s.
    runs, images = (10, 100) if quick else (50, 200)
    f = json.loads(run([difflog, "bench", "compare", "--root", os.path.join(work, "compare", "runs"),
                        "--runs", str(runs), "--images", str(images), "--size", "256", "--json"]).stdout)
    s = "7 compare"
    row(s, f"{runs} runs x {images} images of 256 px, grid {f['grid']}: nothing cached, s",
        round(f["uncached_s"], 2), "<= 10", f["uncached_s"] <= 10)
    row(s, "same, cached, s", round(f["cached_s"], 3), "<= 1", f["cached_s"] <= 1)
    row(s, "baseline: decode every image once on all cores, s / uncached compare over it",
        f"{f['decode_all_s']:.2f} / {f['uncached_over_decode']:.2f}")
    return f


@section("8 max-rate")
def max_rate():
    # issue 15 item 3: --max-rate caps the whole process; achieved within 10 %
    # of the cap, and the daemon's CPU stays flat (it sleeps between slots).
    calls = 10 if quick else 40
    root = os.path.join(work, "maxrate")
    rec = json.loads(run([difflog, "bench", "record", "--calls", str(calls), "--size", "512", "--root", root,
                          "--no-baseline", "--json"]).stdout)
    media = 0
    for d, _, fs in os.walk(os.path.join(rec["run_dir"], "media")):
        media += sum(os.path.getsize(os.path.join(d, n)) for n in fs)
    cap = 2 * 1024 * 1024
    t = time.perf_counter()
    p = run(["/usr/bin/time", "-f", "%U %S", sync, "upload", root, "--to", "mlflow+" + url,
             "--max-rate", "2MiB/s", "--json"])
    wall = time.perf_counter() - t
    user, sys_ = (float(x) for x in p.stderr.strip().splitlines()[-1].split())
    achieved = media / wall
    cpu = 100 * (user + sys_) / wall
    s = "8 max-rate"
    row(s, f"{calls} images of 512² ({media / 1e6:.1f} MB) at --max-rate 2MiB/s: achieved MiB/s",
        f"{achieved / 1024 / 1024:.3f}")
    row(s, "achieved / cap (media bytes over the whole upload, metadata included in the time)",
        round(achieved / cap, 3), "0.9 - 1.1", 0.9 <= achieved / cap <= 1.1)
    row(s, "difflog-sync CPU during it, % of one core", round(cpu, 2), "<= 10", cpu <= 10)
    return {"media_bytes": media, "wall_s": wall, "achieved_bytes_per_s": achieved, "cap": cap,
            "cpu_percent": cpu}


@section("9 python autolog")
def python_autolog():
    # issues 16, 30: W&B's real offline autolog vs difflog.autolog on the same
    # 512x512 outputs, taking turns call by call with a process that records
    # nothing; no generator passed (the default path); difflog's package
    # built in release for the figures.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    venv = run([os.path.join(root, "scripts/python-env"), "--release"]).stdout.strip()
    py = os.path.join(venv, "python")
    if run([py, "-c", "import wandb, moviepy"], check=False).returncode != 0:
        # W&B's client, and MoviePy (which its wandb.Video encodes with)
        # without its dependencies' pins touching the venv's Pillow.
        run([os.path.join(venv, "pip"), "install", "-q", "wandb==0.31.0", "decorator", "imageio",
             "imageio-ffmpeg", "proglog", "python-dotenv"])
        run([os.path.join(venv, "pip"), "install", "-q", "--no-deps", "moviepy==2.2.1"])
    f = json.loads(run([py, os.path.join(root, "benches/python_autolog.py"), "--json",
                        "--calls", "4" if quick else "8"]).stdout.strip().splitlines()[-1])
    s = "9 python autolog"
    row(s, f"median ms in the caller's thread per call ({f['images_per_call']} images of 512²): W&B autolog",
        f["wandb_caller_ms_per_call"])
    row(s, "the same, difflog.autolog", f["difflog_caller_ms_per_call"])
    row(s, "difflog / W&B", f["difflog_over_wandb"], "<= 0.025", f["difflog_over_wandb"] <= 0.025)
    row(s, f"difflog / the tiny pipeline's own {f['pipeline_own_ms_per_call']} ms", f["difflog_over_pipeline"],
        "<= 0.02", f["difflog_over_pipeline"] <= 0.02)
    ratio = f["difflog_over_wandb_cpu"]
    row(s, "whole-process recording CPU per call (all threads, minus no recorder): difflog / W&B",
        ratio, "<= 1", ratio is not None and ratio <= 1)
    # issue 37: video calls (AnimateDiff, one 16-frame 512² video a call).
    v = json.loads(run([py, os.path.join(root, "benches/python_autolog.py"), "--json", "--video", "16",
                        "--calls", "4" if quick else "8"]).stdout.strip().splitlines()[-1])
    row(s, "median ms in the caller's thread per video call (16 frames of 512²): W&B autolog",
        v["wandb_caller_ms_per_call"])
    row(s, "the same, difflog.autolog", v["difflog_caller_ms_per_call"])
    row(s, "video: difflog / W&B", v["difflog_over_wandb"], "<= 0.025", v["difflog_over_wandb"] <= 0.025)
    vr = v["difflog_over_wandb_cpu"]
    row(s, "video: recording CPU per call (ffmpeg's included): difflog / W&B", vr, "<= 1",
        vr is not None and vr <= 1)
    f["video"] = v
    return f


@section("11 generate")
def generate_overhead():
    # issue 17: recording a generation vs the same generation with recording
    # disabled (interleaved, one process), for each tiny model family.
    s = "11 generate"
    out = {}
    for model, calls, steps in [("tiny", 60, 10), ("tiny-inpaint", 40, 10), ("tiny-flux", 60, 4),
                                ("tiny-flux-dev", 60, 6), ("tiny-sd3", 30, 4)]:
        calls = max(calls // 4, 5) if quick else calls
        f = json.loads(run([difflog, "bench", "generate", "--model", model, "--calls", str(calls),
                            "--steps", str(steps), "--root", os.path.join(work, "gen"),
                            "--json"]).stdout.strip().splitlines()[-1])
        ratio = f["ratio_recorded_to_disabled"]
        row(s, f"{model}, {calls} calls of {f['disabled_ms_median']:.0f} ms: recorded / disabled",
            round(ratio, 3), "<= 1.05", ratio <= 1.05)
        out[model] = {k: v for k, v in f.items() if k != "run_dir"}
    return out


@section("10 fleet")
def fleet():
    # issue 15 item 4: N boxes (difflog-sync processes, own roots) against one
    # MLflow server, proxied and with artifacts straight to an S3 store, vs
    # the same bytes PUT by N keep-alive clients; 0 missing, 0 duplicated.
    out = run(["python3", os.path.join(repo, "benches", "fleet_bench.py"), bin_dir, os.path.join(work, "fleet")]
              + (["--quick"] if quick else [])).stdout
    f = json.loads(out.strip().splitlines()[-1])
    s = "10 fleet"
    for r in f["results"]:
        row(s, f"{r['mode']}, {r['boxes']} box(es), {r['megabytes']} MB: difflog-sync / keep-alive baseline, MB/s",
            f"{r['difflog_mb_s']} / {r['baseline_mb_s']} (ratio {r['ratio']})")
        row(s, f"{r['mode']}, {r['boxes']} box(es): server CPU during it, % of one core; missing / duplicated",
            f"{r['server_cpu_percent']}; {r['missing']} / {r['duplicated']}", "0 / 0",
            r["missing"] == 0 and r["duplicated"] == 0)
    return f


@section("12 png")
def png_bench():
    # issue 38: the compact PNG encoding (the default) against the fast one,
    # zlib level 6, PIL's default (the .venv-bench Pillow) and the other
    # compressors (--candidates) on the same natural-looking 512x512 images;
    # then the recorder with each encoding, side by side in one process.
    f = json.loads(run([difflog, "bench", "png", "--count", "8" if quick else "24", "--size", "512",
                        "--python", bench_py, "--candidates", "--json"]).stdout)
    s = "12 png"
    for e in f["encodings"]:
        row(s, f"{e['name']}: bytes, ms an image (one thread)", f"{e['bytes']}, {e['ms_per_image']:.2f}")
    row(s, "PIL's default: bytes", f["pil_bytes"])
    row(s, "compact / PIL bytes", round(f["compact_over_pil"], 3), "<= 1", f["compact_over_pil"] <= 1)
    row(s, "compact / fast encoding time", round(f["compact_time_over_fast"], 2), "<= 1.1",
        f["compact_time_over_fast"] <= 1.1)
    small = [c for c in f["candidates"] if c["bytes"] <= f["pil_bytes"]]
    if small:
        best = min(small, key=lambda c: c["ms_per_image"])
        row(s, "fastest candidate no larger than PIL's", f"{best['compressor']}, {best['filter']}: "
            f"{best['ms_per_image']:.2f} ms ({best['time_over_fast']:.2f}x fast)")
    rec = json.loads(run([difflog, "bench", "record", "--calls", "50" if quick else "200", "--size", "512",
                          "--images", "natural", "--compare-png", "--candidates", "--python", bench_py,
                          "--root", os.path.join(work, "png-record"), "--json"]).stdout)
    by = {r["png"]: r for r in rec["runs"]}
    ratio = rec["compact_throughput_over_fast"]
    row(s, "bench record, natural images: compact / PIL bytes", round(rec["compact_over_pil"], 3), "<= 1",
        rec["compact_over_pil"] <= 1)
    row(s, "recording images/s with compact / with fast", round(ratio, 3), ">= 0.9", ratio >= 0.9)
    for enc in ("fast", "compact"):
        r = by[enc]["ratio_to_encode_and_write"]
        row(s, f"recording / (encode + plain write), {enc}", round(r, 2), "<= 1.3" if enc == "compact" else "",
            r <= 1.3 if enc == "compact" else "")
    small = [c for c in rec["candidates"] if c["bytes"] <= rec["pil_bytes"]]
    if small:
        best = max(small, key=lambda c: c["images_per_s"])
        row(s, "bench record: fastest candidate (encode + write, all cores) no larger than PIL's",
            f"{best['compressor']}, {best['filter']}: {best['images_per_s']:.0f} images/s "
            f"({best['time_over_fast']:.2f}x fast's time)")
    # and how the media are made durable: an fsync per file against one syncfs
    # per commit, in turns, medians of five rounds.
    sy = json.loads(run([difflog, "bench", "record", "--calls", "200" if quick else "600", "--size", "512",
                         "--images", "natural", "--compare-sync", "--rounds", "3" if quick else "5",
                         "--root", os.path.join(work, "sync-record"), "--json"]).stdout)
    for m in sy["modes"]:
        r = m["median_ratio"]
        goal = m["sync"] == "group"
        row(s, f"recording / (encode + plain write), compact, {m['sync']} syncs (median)", round(r, 2),
            "<= 1.3" if goal else "", r <= 1.3 if goal else "")
    return {"encodings": f, "record": rec, "sync": sy}


@section("13 provenance")
def provenance_bench():
    # issue 36: recording the same 512x512 natural images without marks and
    # with a provenance configuration (a C2PA manifest signed with a test
    # CA's ES256 key, made by the .venv-diffusers Python as the suite makes
    # it; a watermark), each mark alone and both, in turns, medians.
    venv = run([os.path.join(repo, "scripts/python-env")]).stdout.strip()
    keys = os.path.join(work, "provenance")
    run([os.path.join(venv, "python"), os.path.join(repo, "tests/python/provenance_oracle.py"), "ca", keys])
    sign = '[sign]\ncertificate_chain = "chain.pem"\nprivate_key = "key.pem"\n'
    mark = '[watermark]\ntext = "difflog"\n'
    s = "13 provenance"
    out = {}
    for name, text in (("signing", sign), ("watermark", mark), ("both", sign + mark)):
        cfg = os.path.join(keys, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(text)
        f = json.loads(run([difflog, "bench", "record", "--calls", "60" if quick else "200", "--size", "512",
                            "--images", "natural", "--compare-provenance", cfg,
                            "--rounds", "3" if quick else "5",
                            "--root", os.path.join(work, "provenance-record"), "--json"]).stdout)
        goal = name == "both"
        row(s, f"recording with marks / without, {name} (medians)", round(f["ratio"], 3),
            "<= 1.2" if goal else "", f["ratio"] <= 1.2 if goal else "")
        row(s, f"the same in CPU time, {name} (medians)", round(f["cpu_ratio"], 3))
        if goal:
            row(s, "caller held per call (p50), ms: without, with marks",
                f"{f['plain_blocked_p50_ms']:.3f}, {f['marked_blocked_p50_ms']:.3f}")
            st = f["steps"]
            row(s, "one thread, ms an image: encode, watermark, sign",
                f"{st['encode_ms']:.2f}, {st['watermark_ms']:.2f}, {st['sign_ms']:.2f}")
            row(s, "encoding the watermarked pixels, ms an image (bytes / unmarked)",
                f"{st['encode_marked_ms']:.2f} ({st['marked_bytes_ratio']:.3f})")
            row(s, "encoding with the watermark as recorded (strip by strip), ms an image",
                f"{st['encode_watermarked_ms']:.2f}")
        out[name] = f
    return out


@section("14 video frames")
def video_bench():
    # issue 37: a clip's frames written on one core as an animated PNG and
    # as a GIF, beside the recorder's still PNG of each frame.
    s = "14 video frames"
    f = json.loads(run([difflog, "bench", "video", "--frames", "8" if quick else "16",
                        "--size", "512", "--json"]).stdout)
    for w in f["ways"]:
        row(s, f"{w['name']}: frames/s on one core, bytes", f"{w['frames_per_s']:.1f}, {w['bytes']}")
    return f


with open(out_path, "w") as f:
    json.dump({**results, "rows": rows, "failed_sections": failed}, f, indent=2)
print(f"difflog benchmark ({results['mode']} mode), {results['date']}, {results['machine']}\n")
print("| section | figure | measured | target | met |\n|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(str(x) for x in r) + " |")
print(f"\nJSON: {out_path}")
if failed:
    print(f"FAILED sections: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1)
