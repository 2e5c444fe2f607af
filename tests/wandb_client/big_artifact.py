"""Logs, with W&B's own client offline, one artifact holding a file of SIZE
bytes (a sparse file of zeros: no disk used), so that `wandb sync` uploads
it the way W&B's client uploads large files — in parts, at 2 GiB or more
(tests/sync_wandb_client.rs checks the emulator's multipart protocol
against it).

usage: python big_artifact.py SIZE OUT_DIR   (prints the offline run dir)
"""

import os
import sys


def main():
    size, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "big.bin")
    with open(path, "wb") as f:
        f.truncate(size)
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(project="multipart", dir=out)
    art = wandb.Artifact("big-file", type="dataset")
    # "immutable": no staging copy of the 2 GiB file.
    art.add_file(path, policy="immutable")
    run.log_artifact(art)
    run_dir = run.dir
    run.finish()
    print(os.path.dirname(run_dir))


if __name__ == "__main__":
    main()
