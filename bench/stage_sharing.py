"""Wall time of a grid subset with and without shared stages (the stage store), in one run, same machine.

The subset: Step III (eform → AGL → DFT) on Dataset1, Dataset2 and MIX plus the AFLOW row of Step II (eform → AGL),
one seed, protocol=cv fold 0 — four runs that start with the same eform → AGL stage. Without sharing each trains it;
with sharing the first trains it and the other three load it. Runs go one after another (never two at once).

    python bench/stage_sharing.py [--agl-epochs 10] [--dft-epochs 30]   # writes the `stage_sharing` section
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, machine, write_section  # noqa: E402

RUNS = [("step3", ["experiment=paper_step3", "data=dataset1,dataset2,mix"]),
        ("aflow", ["experiment=paper_step2", "finetune=agl", "data=agl"])]


def grid(out: Path, cache: Path, sharing: bool, budget: list[str]) -> tuple[float, list[dict]]:
    """(wall seconds, results) of the subset, run into `out` with the stage store under `cache`."""
    env = dict(os.environ, PARAISITE_CACHE_DIR=str(cache), HYDRA_FULL_ERROR="1")
    started = time.perf_counter()
    for name, args in RUNS:
        cmd = [sys.executable, str(ROOT / "train.py"), "-m", *args, "protocol=cv", "fold=0", "seed=1",
               f"stage_cache={str(sharing).lower()}", "progress_bar=false", *budget, f"hydra.sweep.dir={out / name}"]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    return wall, [json.loads(p.read_text()) for p in sorted(out.rglob("results.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agl-epochs", type=int, default=10)
    parser.add_argument("--dft-epochs", type=int, default=30)
    args = parser.parse_args()
    budget = [f"stage_by_data.agl.epochs={args.agl_epochs}", "stage_by_data.agl.batch_size=32",
              f"stage_defaults.epochs={args.dft_epochs}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = tmp / "graphs"  # both arms start with the same warm graph cache and an empty stage store
        subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=smoke", "finetune=dft", "stage_cache=false",
                        f"hydra.run.dir={tmp / 'warmup'}"], cwd=ROOT, check=True, capture_output=True,
                       env=dict(os.environ, PARAISITE_CACHE_DIR=str(warm)))
        arms = {}
        for sharing in (False, True):
            cache = tmp / f"cache-{sharing}"
            subprocess.run(["cp", "-r", str(warm), str(cache)], check=True)
            arms[sharing] = grid(tmp / f"out-{sharing}", cache, sharing, budget)
    (plain, plain_runs), (shared, shared_runs) = arms[False], arms[True]
    reused = sum("reused_from" in s for r in shared_runs for s in r["stages"])
    same = all(a["test"] == b["test"] for a, b in zip(plain_runs, shared_runs))
    body = f"""### Shared stages: a grid subset with and without the stage store
Machine: {machine()}. Command: `python bench/stage_sharing.py --agl-epochs {args.agl_epochs} --dft-epochs {args.dft_epochs}`
(Step III on Dataset1/Dataset2/MIX + the Step II AFLOW row, seed 1, protocol=cv fold 0; AGL {args.agl_epochs} epochs at
batch 32, DFT {args.dft_epochs} epochs at batch 8; the four runs share one eform → AGL stage; run one after another).

| | wall time (s) | AGL stages trained | stages reused |
|---|---|---|---|
| `stage_cache=false` | {plain:.0f} | 4 | 0 |
| `stage_cache=true` | {shared:.0f} | 1 | {reused} |

Speed-up **{plain / shared:.2f}×**; test metrics identical with and without sharing: {same}.
"""
    write_section("stage_sharing", body)
    print(body)


if __name__ == "__main__":
    main()
