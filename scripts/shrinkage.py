"""How far a cv row's out-of-fold predictions are pulled toward the middle: per row and test set, of the ensemble of its
repeats (`stats.ensemble`), the slope of log10(predicted) on log10(true) (1: no pull), the mean of log10(predicted /
true) (the bias in decades; 0: none) and the MAPE of all materials, of those below 5 and of those above 30 W/mK.
    python scripts/shrinkage.py outputs/aglcosine_cv/cut --row agl_dft
"""

from __future__ import annotations

import argparse

import numpy as np

from paraisite.report import find_runs, is_pooled, label, repeats_of, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run or sweep folders")
    parser.add_argument("--row", default="", help="only rows whose label contains this")
    args = parser.parse_args()
    print("| row | test set | materials | slope | bias (decades) | MAPE | MAPE κ < 5 (n) | MAPE κ > 30 (n) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in summarize(find_runs(args.runs), n_boot=1):
        if not is_pooled(row) or args.row not in label(row) or not row["_repeats"]:
            continue
        for test, joint in repeats_of(row, as_ensemble=True)["committee"].items():
            true, pred = joint.true, np.maximum(joint.pred, 1e-3)
            slope = np.polyfit(np.log10(true), np.log10(pred), 1)[0]
            ape = np.abs(pred - true) / true
            low, high = true < 5, true > 30
            print(f"| {label(row)} | {test} | {len(true)} | {slope:.2f} | {np.mean(np.log10(pred / true)):+.2f} | "
                  f"{ape.mean():.3f} | {ape[low].mean() if low.any() else np.nan:.2f} ({low.sum()}) | "
                  f"{ape[high].mean() if high.any() else np.nan:.2f} ({high.sum()}) |")


if __name__ == "__main__":
    main()
