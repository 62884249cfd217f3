"""Decoding a committee for MAPE: does shrinking each material's prediction by the members' disagreement help?

Per material i, the members' predictions p_ij (j: the member rows, each its own out-of-fold ensemble over its
repeats; a member "A|B" is the per-source experts of rows A and B), z_i = mean_j ln p_ij, s_i² = var_j ln p_ij.
For a log-normal belief of width σ the prediction of least expected relative error is exp(μ − σ²), below the median,
so the decoded prediction is exp(z_i − a − k·s_i²). Decoders, scored against the committee's arithmetic mean (what
`paraisite report --committee` reports) on the same materials:
  geometric  a = k = 0 (nothing fitted)
  factor     k = 0, a fitted
  spread     a and k fitted
Fitting never sees a test label: the materials are split into 5 folds (fixed permutation); each fold's (a, k) is the
grid point of least MAPE over the other four folds' materials, then applied to the fold.
    python scripts/decode_committee.py outputs/routed_cv … --test dataset1 --member "m3gnet/eform/dft/dataset1 [cv]" …
"""

from __future__ import annotations

import argparse

import numpy as np

from paraisite.report import experts, find_row, find_runs, repeats_of, summarize
from paraisite.stats import Repeat, bootstrap, paired, rng_for

A_GRID = np.round(np.arange(-0.5, 0.501, 0.01), 2)
K_GRID = np.round(np.arange(0.0, 4.001, 0.05), 2)
FOLDS = 5


def member_ensemble(rows: list[dict], spec: str, test: str) -> Repeat:
    """The out-of-fold ensemble of one member row (`spec`: a label, or "A|B" for the experts of rows A and B)."""
    names = spec.split("|")
    row = experts(rows, names, "mape", n_boot=1) if len(names) > 1 else find_row(rows, spec)
    return repeats_of(row, as_ensemble=True)["committee"][test]


def fit(z: np.ndarray, s2: np.ndarray, true: np.ndarray, ks: np.ndarray) -> tuple[float, float]:
    """(a, k) of least MAPE of exp(z − a − k·s2) over the grids (k restricted to `ks`)."""
    shift = A_GRID[:, None, None] + ks[None, :, None] * s2[None, None, :]
    mape = np.mean(np.abs(np.exp(z[None, None, :] - shift) - true) / true, axis=-1)
    i, j = np.unravel_index(np.argmin(mape), mape.shape)
    return float(A_GRID[i]), float(ks[j])


def decode(z: np.ndarray, s2: np.ndarray, true: np.ndarray, ks: np.ndarray) -> tuple[np.ndarray, list]:
    """Out-of-fold decoded predictions and each fold's (a, k)."""
    fold = np.random.default_rng(0).permutation(len(z)) % FOLDS
    pred, params = np.empty_like(z), []
    for f in range(FOLDS):
        a, k = fit(z[fold != f], s2[fold != f], true[fold != f], ks)
        pred[fold == f] = np.exp(z[fold == f] - a - k * s2[fold == f])
        params.append((a, k))
    return pred, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run or sweep folders")
    parser.add_argument("--test", required=True, help="the test set scored")
    parser.add_argument("--member", action="append", required=True, help="a member row (\"A|B\": experts)")
    parser.add_argument("--name", default="committee", help="the committee's name in the table")
    args = parser.parse_args()
    rows = summarize(find_runs(args.runs), n_boot=1)
    own = [member_ensemble(rows, spec, args.test) for spec in args.member]
    ids = own[0].ids
    for other in own[1:]:
        ids = np.intersect1d(ids, other.ids)
    own = [o.subset(np.isin(o.ids, ids)) for o in own]
    true = own[0].true
    logs = np.log(np.maximum(np.stack([o.pred for o in own]), 1e-3))
    z, s2 = logs.mean(0), logs.var(0)
    arithmetic = Repeat("committee", ids, true, np.mean([o.pred for o in own], axis=0))
    decoded = {"geometric": (np.exp(z), [])}
    decoded["factor"] = decode(z, s2, true, np.zeros(1))
    decoded["spread"] = decode(z, s2, true, K_GRID)
    base = bootstrap([arithmetic], "mape", "kappa", rng_for("decode", args.name, args.test))
    print(f"{args.name} on {args.test} ({len(ids)} materials; members: {', '.join(args.member)})")
    print("| decoder | MAPE [95 % CI] | − arithmetic mean [95 % CI] | p | (a, k) per fold |")
    print("|---|---|---|---|---|")
    print(f"| arithmetic mean | {base['estimate']:.3f} [{base['lo']:.3f}, {base['hi']:.3f}] | | | |")
    for name, (pred, params) in decoded.items():
        repeat = Repeat("committee", ids, true, pred)
        score = bootstrap([repeat], "mape", "kappa", rng_for("decode", args.name, args.test, name))
        diff = paired([repeat], [arithmetic], "mape", "kappa", rng_for("decode-diff", args.name, args.test, name))
        shown = " ".join(f"({a:+.2f}, {k:.2f})" for a, k in params)
        print(f"| {name} | {score['estimate']:.3f} [{score['lo']:.3f}, {score['hi']:.3f}] | {diff['diff']:+.3f} "
              f"[{diff['lo']:+.3f}, {diff['hi']:+.3f}] | {diff['p']:.3g} | {shown} |")
    print(f"median s (members' spread in ln κ): {np.median(np.sqrt(s2)):.2f}; "
          f"Spearman ρ(s², ln(arithmetic/true)): {spearman(s2, np.log(arithmetic.pred / true)):+.2f}")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


if __name__ == "__main__":
    main()
