"""Reads a run back through W&B's public API (`wandb.Api`), as a W&B user's
script would: its history, its files, and each logged table through its
`run_table` artifact. Used by the opt-in live test in tests/sync_wandb.rs
against real W&B, and by tests/sync_wandb_client.rs against the emulator
(which proves the emulator answers these queries as W&B's client expects).

usage: python read_back.py ENTITY PROJECT RUN   (prints a JSON summary)
"""

import json
import sys

import wandb


def main():
    entity, project, name = sys.argv[1:4]
    run = wandb.Api().run(f"{entity}/{project}/{name}")
    history = list(run.scan_history())
    files = [f.name for f in run.files()]
    arts = [a for a in run.logged_artifacts() if a.type == "run_table"]
    tables = []
    for art in arts:
        for entry in art.manifest.entries:
            if entry.endswith(".table.json"):
                table = art.get(entry[: -len(".table.json")])
                tables.append({"artifact": art.name, "rows": len(table.data),
                               "columns": table.columns})
    # Every table value in the history names its artifact.
    paths = [v.get("artifact_path") for line in history for v in line.values()
             if isinstance(v, dict) and v.get("_type") == "table-file"]
    print(json.dumps({
        "history_rows": len(history),
        "files": files,
        "table_artifacts": [a.name for a in arts],
        "tables": tables,
        "artifact_paths": paths,
    }))


if __name__ == "__main__":
    main()
