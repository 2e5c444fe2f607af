"""Fleet benchmark (issue 15, part 4): N boxes, one server. N difflog-sync
processes, each with its own root of runs (standing in for N GPU boxes),
upload at once to one MLflow server — proxied (artifacts through the
server) and direct (artifacts straight to an S3-compatible store, the
server started with --default-artifact-root s3://… --no-serve-artifacts).
Beside each, the baseline measured in the same run: the same bytes PUT by
N processes of a minimal keep-alive client (4 connections each; the
images and the tables) — to the server's artifact endpoint, or to the
bucket with boto3. Printed per N:
aggregate MB/s of both and their ratio, the server's CPU (MLflow, and the
object store), and a check of every box's run: exactly one MLflow run,
every image and table there once (0 duplicates, 0 missing).

    python3 benches/fleet_bench.py BIN_DIR WORK_DIR [--quick] [--json]

Starts its own servers (scripts/mlflow-server, scripts/s3-server) and
stops them at the end.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tables import tables_of  # noqa: E402

bin_dir, work = sys.argv[1], sys.argv[2]
quick = "--quick" in sys.argv
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
difflog = os.path.join(bin_dir, "difflog")
sync = os.path.join(bin_dir, "difflog-sync")
py = os.path.join(repo, ".venv", "bin", "python")
ACCESS, SECRET, BUCKET = "fleet-key", "fleet-secret-5c1e", "fleet"
boxes_list = [1, 2, 4] if quick else [1, 2, 4, 8]
calls = 8 if quick else 24
rounds = 1 if quick else 3
groups = []


def start(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.split()
    groups.append(int(out[1]))
    return out[0], int(out[1])


def stop_all():
    for g in groups:
        try:
            os.killpg(g, signal.SIGTERM)
        except ProcessLookupError:
            pass


def group_cpu(pgid):
    """CPU seconds used so far by every live process of a process group."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(parts[2]) == pgid:
            total += (int(parts[11]) + int(parts[12]) + int(parts[13]) + int(parts[14])) / tick
    return total


def api(url, path, body=None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


def make_boxes(n, tag):
    """n roots, one run each: `calls` 512x512 images plus their tables."""
    roots, files = [], []
    for i in range(n):
        root = os.path.join(work, f"{tag}-box{i}")
        out = subprocess.run([difflog, "bench", "record", "--calls", str(calls), "--size", "512", "--root", root,
                              "--no-baseline", "--json"],
                             check=True, capture_output=True, text=True).stdout
        run_dir = json.loads(out)["run_dir"]
        pngs = []
        for d, _, fs in os.walk(os.path.join(run_dir, "media")):
            pngs += [os.path.join(d, f) for f in fs if f.endswith(".png")]
        roots.append((root, run_dir))
        files.append(pngs + tables_of(run_dir, os.path.join(work, f"{tag}-tables{i}")))
    return roots, files


LIMIT_CLIENT = r"""
import http.client, os, sys, threading, urllib.parse
mode, target, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
files = sys.argv[4:]
chunks = [files[i::4] for i in range(4)]
if mode == "proxied":
    host = urllib.parse.urlparse(target)
    def put_all(fs):
        c = http.client.HTTPConnection(host.hostname, host.port)
        for f in fs:
            body = open(f, "rb").read()
            c.request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{prefix}/limit/{os.path.basename(f)}",
                      body=body, headers={"Content-Type": "image/png" if f.endswith(".png") else "application/json"})
            r = c.getresponse(); r.read()
            assert r.status == 200, r.status
        c.close()
else:
    import boto3
    s3 = boto3.client("s3", endpoint_url=target)
    bucket, key_prefix = prefix.split("/", 1)
    def put_all(fs):
        for f in fs:
            s3.put_object(Bucket=bucket, Key=f"{key_prefix}/limit/{os.path.basename(f)}", Body=open(f, "rb").read(),
                          ContentType="image/png" if f.endswith(".png") else "application/json")
ts = [threading.Thread(target=put_all, args=(ch,)) for ch in chunks]
[t.start() for t in ts]
[t.join() for t in ts]
"""


def timed_parallel(cmds, env, pgids):
    """Runs cmds at once; wall seconds and CPU seconds of the server groups."""
    cpu0 = [group_cpu(g) for g in pgids]
    t = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    errs = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t
    for p, e in zip(procs, errs):
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {e[-2000:]}")
    return wall, [group_cpu(g) - c for g, c in zip(pgids, cpu0)]


def check(url, roots, mode, s3_dir):
    """Every box's run once at MLflow, each image and table there once."""
    missing = duplicated = 0
    for _, run_dir in roots:
        meta = json.load(open(os.path.join(run_dir, "run.json")))
        exp = api(url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={meta['project']}")
        found = api(url, "/api/2.0/mlflow/runs/search", {
            "experiment_ids": [exp["experiment"]["experiment_id"]],
            "filter": f"tags.`difflog.run_id` = '{meta['id']}'", "max_results": 10})["runs"]
        if len(found) != 1:
            duplicated += max(0, len(found) - 1)
            missing += 1 if not found else 0
            continue
        info = found[0]["info"]
        want = set()
        for d, _, fs in os.walk(os.path.join(run_dir, "media")):
            want |= {"images/" + f for f in fs if f.endswith(".png")}
        want |= {f"Result-Table/Pipeline-Call-{c}.json" for c in range(1, calls + 1)}
        if mode == "direct":
            root = os.path.join(s3_dir, info["artifact_uri"].split("s3://", 1)[1])
            have = []
            for d, _, fs in os.walk(root):
                have += [os.path.relpath(os.path.join(d, f), root) for f in fs]
        else:
            prefix = info["artifact_uri"].split("mlflow-artifacts:", 1)[1].lstrip("/")
            have = []
            for sub in ("images", "Result-Table"):
                listed = api(url, f"/api/2.0/mlflow-artifacts/artifacts?path={prefix}/{sub}").get("files", [])
                have += [f"{sub}/{f['path']}" for f in listed]
        missing += len(want - set(have))
        duplicated += len(have) - len(set(have))
    return missing, duplicated


try:
    s3_dir = os.path.join(work, "s3")
    os.makedirs(os.path.join(s3_dir, BUCKET), exist_ok=True)
    s3_url, s3_pgid = start([os.path.join(repo, "scripts/s3-server"), s3_dir, ACCESS, SECRET])
    proxied_url, proxied_pgid = start([os.path.join(repo, "scripts/mlflow-server"), os.path.join(work, "m1")])
    env = dict(os.environ, MLFLOW_ARTIFACT_ROOT=f"s3://{BUCKET}/mlruns")
    direct_url, direct_pgid = start([os.path.join(repo, "scripts/mlflow-server"), os.path.join(work, "m2")],
                                    env=env)
    client_env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET,
                      AWS_DEFAULT_REGION="us-east-1", MLFLOW_S3_ENDPOINT_URL=s3_url)
    results = []
    # Warm-up: a fresh MLflow server is slow on its first requests.
    for url in (proxied_url, direct_url):
        roots, _ = make_boxes(1, f"warm{len(results)}")
        subprocess.run([sync, "upload", roots[0][0], "--to", "mlflow+" + url], check=True, env=client_env,
                       stdout=subprocess.DEVNULL)
        results.append(None)
    results = []
    for mode, url in (("proxied", proxied_url), ("direct", direct_url)):
        server_groups = [proxied_pgid] if mode == "proxied" else [direct_pgid, s3_pgid]
        for n in boxes_list:
            # Best of `rounds` for each contender (this machine is noisy),
            # each round on fresh runs (a re-upload would send nothing).
            best, base_best, missing, duplicated = None, None, 0, 0
            for k in range(rounds):
                roots, files = make_boxes(n, f"{mode}{n}-{k}")
                total = sum(os.path.getsize(f) for fs in files for f in fs)
                wall, cpu = timed_parallel([[sync, "upload", r, "--to", "mlflow+" + url] for r, _ in roots],
                                           client_env, server_groups)
                m, d = check(url, roots, mode, s3_dir)
                missing, duplicated = missing + m, duplicated + d
                if best is None or wall < best[0]:
                    best = (wall, cpu)
                # The baseline: the same bytes, N processes of 4 keep-alive PUT connections each.
                project = json.load(open(os.path.join(roots[0][1], "run.json")))["project"]
                exp = api(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + project)
                cmds = []
                for fs in files:
                    info = api(url, "/api/2.0/mlflow/runs/create",
                               {"experiment_id": exp["experiment"]["experiment_id"]})["run"]["info"]
                    uri = info["artifact_uri"]
                    prefix = uri.split("mlflow-artifacts:", 1)[1].lstrip("/") if mode == "proxied" else \
                        uri.split("s3://", 1)[1]
                    target = url if mode == "proxied" else s3_url
                    cmds.append([py, "-c", LIMIT_CLIENT, mode, target, prefix] + fs)
                base = timed_parallel(cmds, client_env, server_groups)
                if base_best is None or base[0] < base_best[0]:
                    base_best = base
            (wall, cpu), (base_wall, base_cpu) = best, base_best
            r = {"mode": mode, "boxes": n, "megabytes": round(total / 1e6, 1), "rounds": rounds,
                 "difflog_mb_s": round(total / 1e6 / wall, 2), "baseline_mb_s": round(total / 1e6 / base_wall, 2),
                 "ratio": round(base_wall / wall, 3),
                 "server_cpu_s": [round(c, 2) for c in cpu], "baseline_server_cpu_s": [round(c, 2) for c in base_cpu],
                 "server_cpu_percent": round(100 * sum(cpu) / wall, 1),
                 "missing": missing, "duplicated": duplicated}
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
    print(json.dumps({"calls_per_box": calls, "results": results}))
finally:
    stop_all()
