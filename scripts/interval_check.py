"""How the shipped intervals hold, and whether a chemistry-adaptive width would hold better.

For a cv row on each of its data sets: the row's out-of-fold ensemble (`paraisite.intervals`, what
`paraisite bundle --interval-cv` calibrates on), split into 5 parts; each part's 90 % interval calibrated on the
other four. Two widths: *constant* (the shipped one: κ ×/÷ one factor) and *adaptive* (normalised conformal: the
factor grows with d, the distance from the material's Magpie statistics to the nearest material its fold models
trained on, as e^(q·(d + median d))). Printed: overall coverage, coverage of the nearer half and of the farthest fifth,
and the median hi/lo ratio there; and the Spearman ρ of d with the log error.
    python scripts/interval_check.py outputs/aglcosine_cv/cut outputs/routed_cv/megnet_s34 \\
        --row "megnet/eform/agl_dft/{data} [cv]"
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from decode_committee import chemistry, folds_of, spearman

from paraisite.report import find_row, find_runs, repeats_of, summarize

LEVEL = 0.9


def nearest_training_distance(row: dict, ids: np.ndarray, x: np.ndarray, data: str) -> np.ndarray:
    """Per material, the mean over the row's repeats of its distance to the nearest material outside its test fold."""
    position = {i: k for k, i in enumerate(ids)}
    distance = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    total, seeds = np.zeros(len(ids)), list(repeats_of(row))
    for seed in seeds:
        fold = np.full(len(ids), -1)
        for run in row["_members"]:
            if run.get("status") == "ok" and run["config"]["seed"] == seed:
                with open(Path(run["dir"]) / "test_predictions.csv") as f:
                    for record in csv.DictReader(f):
                        if record["test_set"] == data and record["id"] in position:
                            fold[position[record["id"]]] = run["config"]["fold"]
        total += [distance[i][fold != fold[i]].min() for i in range(len(ids))]
    return total / len(seeds)


def check(error: np.ndarray, d: np.ndarray, adaptive: bool) -> str:
    part = folds_of(len(error))
    inside, ratio = np.zeros(len(error), dtype=bool), np.zeros(len(error))
    for k in range(5):
        train, test = part != k, part == k
        scale = d + np.median(d[train]) if adaptive else np.ones_like(d)  # the width's factor per material
        scores = np.sort(error[train] / scale[train])
        q = scores[int(np.ceil((train.sum() + 1) * LEVEL)) - 1]
        inside[test] = error[test] <= q * scale[test]
        ratio[test] = np.exp(2 * q * scale[test])
    near, far = d < np.quantile(d, 0.5), d > np.quantile(d, 0.8)
    return (f"{inside.mean():.2f} | {inside[near].mean():.2f} | {inside[far].mean():.2f} | {np.median(ratio):.1f} | "
            f"{np.median(ratio[near]):.1f} | {np.median(ratio[far]):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run or sweep folders")
    parser.add_argument("--row", required=True, help="the cv rows' label, {data} for the data set")
    parser.add_argument("--sets", nargs="+", default=["dataset1", "dataset2", "mix"])
    args = parser.parse_args()
    rows = summarize(find_runs(args.runs), n_boot=1)
    print("| set | ρ(d, log error) | width | coverage | nearer half | farthest fifth | median hi/lo | nearer half | "
          "farthest fifth |")
    print("|---|---|---|---|---|---|---|---|---|")
    for data in args.sets:
        row = find_row(rows, args.row.format(data=data))
        own = repeats_of(row, as_ensemble=True)["committee"][data]
        d = nearest_training_distance(row, own.ids, chemistry(own.ids, data), data)
        error = np.abs(np.log(own.pred / own.true))
        for adaptive in (False, True):
            print(f"| {data} | {spearman(d, error):+.2f} | {'adaptive' if adaptive else 'constant'} | "
                  f"{check(error, d, adaptive)} |")


if __name__ == "__main__":
    main()
