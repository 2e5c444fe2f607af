"""difflog-sync benchmark: the same 200-image run uploaded to the same local
MLflow server by difflog-sync, by MLflow's own Python client (log_artifact),
and by a minimal client that PUTs the same bytes over 4 persistent
keep-alive connections (the limit). Then watch latency (call_finished on
disk to its table on the server) and the idle daemon's CPU and RSS.

Run by benches/sync.sh, which starts the server and builds the binaries.
"""
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

url, bin_dir, work = sys.argv[1], sys.argv[2], sys.argv[3]
quick = len(sys.argv) > 4 and sys.argv[4] == "--quick"
difflog = os.path.join(bin_dir, "difflog")
sync = os.path.join(bin_dir, "difflog-sync")
calls = 40 if quick else 200


def api(path, body=None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# 1. A run with `calls` 512x512 images (the recorder's own benchmark makes it).
runs = os.path.join(work, "runs")
out = subprocess.run([difflog, "bench", "record", "--calls", str(calls), "--size", "512", "--root", runs,
                      "--no-baseline", "--json"], check=True, capture_output=True, text=True).stdout
run_dir = json.loads(out)["run_dir"]
pngs = []
for d, _, files in os.walk(os.path.join(run_dir, "media")):
    pngs += [os.path.join(d, f) for f in files if f.endswith(".png")]
total_bytes = sum(os.path.getsize(p) for p in pngs)

# 2. difflog-sync upload (wall and its own CPU time).
t = time.perf_counter()
ru0 = os.times()
subprocess.run([sync, "upload", runs, "--to", "mlflow+" + url], check=True, stdout=subprocess.DEVNULL)
ru1 = os.times()
sync_s = time.perf_counter() - t
sync_cpu = (ru1.children_user - ru0.children_user) + (ru1.children_system - ru0.children_system)

# 3. MLflow's own client, same files, same server.
client_code = f"""
import mlflow, sys, time
mlflow.set_tracking_uri({url!r})
exp = mlflow.set_experiment("bench-python-client")
files = sys.argv[1:]
t = time.perf_counter()
with mlflow.start_run():
    for f in files:
        mlflow.log_artifact(f, "images")
print(time.perf_counter() - t)
"""
venv_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv", "bin", "python")
py_s = float(subprocess.run([venv_py, "-c", client_code] + pngs, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])

# 4. The limit: the same bytes PUT over 4 keep-alive connections.
exp = api("/api/2.0/mlflow/experiments/get-by-name?experiment_name=bench-python-client")["experiment"]["experiment_id"]
run = api("/api/2.0/mlflow/runs/create", {"experiment_id": exp})["run"]["info"]
prefix = run["artifact_uri"].split("mlflow-artifacts:", 1)[1].lstrip("/")
host = urllib.parse.urlparse(url)
chunks = [pngs[i::4] for i in range(4)]


def put_all(files):
    c = http.client.HTTPConnection(host.hostname, host.port)
    for f in files:
        with open(f, "rb") as fh:
            body = fh.read()
        c.request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{prefix}/limit/{os.path.basename(f)}", body=body,
                  headers={"Content-Type": "image/png"})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    c.close()


t = time.perf_counter()
threads = [threading.Thread(target=put_all, args=(ch,)) for ch in chunks]
[th.start() for th in threads]
[th.join() for th in threads]
limit_s = time.perf_counter() - t

# 5. Watch latency: call_finished on disk -> its table visible on the server.
live_root = os.path.join(work, "live")
os.makedirs(live_root, exist_ok=True)
daemon = subprocess.Popen([sync, "watch", live_root, "--to", "mlflow+" + url], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
time.sleep(1.0)
rec = subprocess.Popen([difflog, "bench", "record", "--calls", "20" if quick else "40", "--size", "64", "--root",
                        live_root, "--no-baseline", "--queue", "1"], stdout=subprocess.DEVNULL)
rec.wait()
live_run = [d for d in os.listdir(live_root) if not d.startswith(".")][0]
finished = {}
with open(os.path.join(live_root, live_run, "events.log"), "rb") as f:
    for line in f:
        rec_json = json.loads(line[9:])
        if rec_json["kind"] == "call_finished":
            ts = rec_json["ts"]
            finished[rec_json["data"]["call"]] = time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0" + ts[19:-1])
# The recorder finished before we could poll per call, so measure on a second,
# paced live run: one call every 300 ms, polling the server for each table.
latencies = []
paced_root = os.path.join(work, "paced")
os.makedirs(paced_root, exist_ok=True)
daemon2 = subprocess.Popen([sync, "watch", paced_root, "--to", "mlflow+" + url], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
time.sleep(1.0)
n_paced = 10 if quick else 20
paced = subprocess.Popen([venv_py, "-c", "import time,subprocess,sys\n"
                          f"for i in range({n_paced}):\n"
                          f"    subprocess.run([{difflog!r}, 'bench', 'record', '--calls', '1', '--size', '64', '--root', {paced_root!r}, '--no-baseline'], stdout=subprocess.DEVNULL)\n"
                          "    time.sleep(0.3)\n"])
seen = set()
deadline = time.time() + 120
while len(seen) < n_paced and time.time() < deadline:
    runs_now = [d for d in os.listdir(paced_root) if not d.startswith(".")]
    res = api("/api/2.0/mlflow/runs/search", {"experiment_ids": [api("/api/2.0/mlflow/experiments/get-by-name?experiment_name=difflog-bench")["experiment"]["experiment_id"]], "max_results": 1000})
    now = time.time()
    for r in res.get("runs", []):
        rid = next((t["value"] for t in r["data"].get("tags", []) if t["key"] == "difflog.run_id"), None)
        if rid in runs_now and rid not in seen and any(t["key"] == "mlflow.loggedArtifacts" for t in r["data"].get("tags", [])):
            with open(os.path.join(paced_root, rid, "events.log"), "rb") as f:
                for line in f:
                    j = json.loads(line[9:])
                    if j["kind"] == "call_finished":
                        ts = j["ts"]
                        t_fin = time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0" + ts[19:-1])
                        latencies.append(now - t_fin)
            seen.add(rid)
    time.sleep(0.02)
paced.wait()
latencies.sort()
p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
p50 = latencies[len(latencies) // 2] if latencies else float("nan")

# 6. Idle daemon: CPU over a window with nothing to do, and RSS.
window = 10 if quick else 60
c0 = cpu_seconds(daemon.pid)
time.sleep(window)
idle_cpu_pct = 100 * (cpu_seconds(daemon.pid) - c0) / window
rss = rss_mb(daemon.pid)
for d in (daemon, daemon2):
    d.terminate()
    d.wait()

figures = {
    "images": len(pngs), "megabytes": round(total_bytes / 1e6, 1),
    "sync_s": round(sync_s, 3), "python_client_s": round(py_s, 3), "keepalive_limit_s": round(limit_s, 3),
    "ratio_to_python_client": round(sync_s / py_s, 3), "ratio_to_limit": round(sync_s / limit_s, 3),
    "sync_cpu_s": round(sync_cpu, 3), "watch_latency_p50_s": round(p50, 3), "watch_latency_p95_s": round(p95, 3),
    "watch_latency_samples": len(latencies),
    "idle_cpu_percent": round(idle_cpu_pct, 3), "idle_window_s": window, "rss_mb": round(rss, 1),
}
rows = [
    ("images / MB", f"{len(pngs)} / {figures['megabytes']}", ""),
    ("difflog-sync upload, s", figures["sync_s"], ""),
    ("MLflow Python client log_artifact, s", figures["python_client_s"], ""),
    ("4 keep-alive PUT connections (limit), s", figures["keepalive_limit_s"], ""),
    ("difflog-sync / Python client", figures["ratio_to_python_client"], "<= 0.4"),
    ("difflog-sync / limit", figures["ratio_to_limit"], "<= 1.25"),
    ("difflog-sync CPU time, s", figures["sync_cpu_s"], ""),
    ("watch latency p50 / p95, s", f"{figures['watch_latency_p50_s']} / {figures['watch_latency_p95_s']} ({len(latencies)} calls)", "p95 <= 1"),
    (f"idle daemon CPU over {window} s, %", figures["idle_cpu_percent"], "<= 0.1"),
    ("idle daemon RSS, MB", figures["rss_mb"], "<= 50"),
]
print("| figure | measured | target |\n|---|---|---|")
for name, v, target in rows:
    print(f"| {name} | {v} | {target} |")
with open(os.path.join(work, "sync-bench.json"), "w") as f:
    json.dump(figures, f, indent=2)
print(json.dumps(figures))
