"""The result tables difflog-sync uploads for a run, written as MLflow
table JSON files — what the benchmarks' baseline clients send besides the
images, so that they send the same bytes."""
import json
import os


def tables_of(run_dir, out):
    """One `Pipeline-Call-N.json` per call of the run in `run_dir`, written
    under `out`; returns their paths."""
    os.makedirs(out, exist_ok=True)
    rows = {}
    with open(os.path.join(run_dir, "events.log"), "rb") as f:
        for line in f:
            j = json.loads(line[9:])
            if j["kind"] == "row":
                cells = [c.get("value") if c["type"] != "image" else
                         {"type": "image", "filepath": "images/" + c["digest"] + ".png"} for c in j["data"]["cells"]]
                rows.setdefault(j["data"]["call"], []).append(cells)
    paths = []
    for call, data in rows.items():
        p = os.path.join(out, f"Pipeline-Call-{call}.json")
        with open(p, "w") as f:
            json.dump({"columns": ["Prompt", "Negative-Prompt", "Generated-Image", "Seed"], "data": data}, f)
        paths.append(p)
    return paths
