"""W&B's client in offline mode logging what its diffusers autolog logs, for
the same images and prompts a difflog run recorded: per call, the image into
`Generated-Image/Pipeline-Call-k` (one log per image, captioned with its
prompt), a one-row `wandb.Table` (Prompt, Negative-Prompt, Generated-Image)
into `Result-Table/Pipeline-Call-k`, and the growing `workflow` config.

    python wandb_offline.py RUN_DIR WORK_DIR   -> one JSON line of figures

The images are decoded from the run's PNGs before the clock starts, so both
sides start from pixels in memory.
"""
import json
import os
import sys
import time

run_dir, work = sys.argv[1], sys.argv[2]
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["WANDB_MODE"] = "offline"
from PIL import Image  # noqa: E402
import wandb  # noqa: E402

calls = {}
with open(os.path.join(run_dir, "events.log"), "rb") as f:
    for line in f:
        rec = json.loads(line[9:])
        d = rec["data"]
        if rec["kind"] == "row":
            cells = {c["column"]: c for c in d["cells"]}
            calls.setdefault(d["call"], []).append(cells)
items = []
for call in sorted(calls):
    for cells in calls[call]:
        img = Image.open(os.path.join(run_dir, cells["Generated-Image"]["path"])).convert("RGB")
        img.load()
        items.append((call, cells["Prompt"].get("value"), (cells.get("Negative-Prompt") or {}).get("value"), img))

t0 = time.perf_counter()
run = wandb.init(project="difflog-bench", dir=work, config={"workflow": []})
t1 = time.perf_counter()
workflow = []
for call, prompt, negative, img in items:
    key = f"Pipeline-Call-{call}"
    wandb.log({f"Generated-Image/{key}": wandb.Image(img, caption=prompt)})
    table = wandb.Table(columns=["Prompt", "Negative-Prompt", "Generated-Image"])
    table.add_data(prompt, negative, wandb.Image(img))
    wandb.log({f"Result-Table/{key}": table})
    workflow.append({"pipeline": {"class": "SyntheticPipeline"}, "params": {"prompt": prompt}, "stage": key})
    wandb.config.update({"workflow": workflow}, allow_val_change=True)
run_dir_w = run.dir
run.finish()
t2 = time.perf_counter()

root = os.path.dirname(run_dir_w.rstrip("/"))  # .../offline-run-…/
size, files = 0, 0
for d, _, fs in os.walk(root):
    for name in fs:
        size += os.path.getsize(os.path.join(d, name))
        files += 1
print(json.dumps({"images": len(items), "init_to_finish_s": t2 - t0, "log_to_finish_s": t2 - t1,
                  "bytes": size, "files": files, "run_dir": root}))
