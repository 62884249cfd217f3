"""The paper grid's cost on this machine: epoch times of the published recipe (every stage batch 8; AGL and the DFT
sets), measured for a few epochs of our stage, projected to one Step III run and to the grid.

    python bench/grid_cost.py [--agl-epochs 2] [--dft-epochs 10] [--seeds 9] [--threads 1]
Timed in process CPU seconds (wall time on an idle core). Writes the `grid-cost` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, write_section  # noqa: E402
from bench.train import build, datamodule, our_stage  # noqa: E402

EPOCHS = 300  # the published recipe: every stage 300 epochs at batch 8
DFT = ("dataset1", "dataset2", "mix")


def main() -> None:
    from paraisite.task import quiet_third_party

    quiet_third_party()
    parser = argparse.ArgumentParser()
    parser.add_argument("--agl-epochs", type=int, default=2)
    parser.add_argument("--dft-epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg, module = build()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    per_epoch = {}
    for name, epochs in (("agl", args.agl_epochs), *((d, args.dft_epochs) for d in DFT)):
        module.load_state_dict(state)
        durations, _ = our_stage(cfg, module, datamodule(name, module.backbone.featurizer(), 8), epochs,
                                 Path(tempfile.mkdtemp()), clock=time.process_time)
        per_epoch[name] = statistics.median(durations)
    stage = {name: EPOCHS * t for name, t in per_epoch.items()}
    step3 = {d: stage["agl"] + stage[d] for d in DFT}
    # per seed: Steps I and II on each DFT set, Step III's DFT stage on each, the AGL stage of the AFLOW rows
    # (scratch → AGL, eform → AGL) and of Step III (eform → AGL); with stage sharing eform → AGL is trained once
    dft_stages = 3 * sum(stage[d] for d in DFT)
    unshared, shared = dft_stages + 5 * stage["agl"], dft_stages + 2 * stage["agl"]
    hours = 3600
    lines = [
        f"Machine: {machine()}. Command: `python bench/grid_cost.py` (our stage, batch 8, median epoch of "
        f"{args.agl_epochs} (AGL) / {args.dft_epochs} (DFT sets) epochs, process CPU seconds).",
        "",
        "| stage (batch 8) | s per epoch | 300 epochs |",
        "|---|---|---|",
        *(f"| {name} | {t:.2f} | {stage[name] / 60:.1f} min |" for name, t in per_epoch.items()),
        "",
        f"One Step III run (eform → AGL 300 → DFT 300): {step3['dataset1'] / 60:.0f} min on Dataset1, "
        f"{step3['dataset2'] / 60:.0f} min on Dataset2, {step3['mix'] / 60:.0f} min on MIX (training only). "
        f"The grid per seed (Steps I–III × 3 DFT sets + the two AFLOW rows): {unshared / hours:.1f} h of one core "
        f"with every AGL stage trained (5 per seed), {shared / hours:.1f} h with stage sharing (2 per seed); "
        f"{args.seeds} seeds: **{args.seeds * unshared / hours:.0f} h** without, **{args.seeds * shared / hours:.0f} h** "
        f"with sharing — {args.seeds * shared / hours / 2:.0f} h of wall time with two jobs on the two cores.",
    ]
    write_section("grid-cost", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
