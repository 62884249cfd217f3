"""Decoding a committee for MAPE: does shrinking each material's prediction by the members' disagreement help?

Per material i, the members' predictions p_ij (j: the member rows, each its own out-of-fold ensemble over its
repeats; a member "A|B" is the per-source experts of rows A and B), z_i = mean_j ln p_ij, s_i² = var_j ln p_ij.
For a log-normal belief of width σ the prediction of least expected relative error is exp(μ − σ²), below the median,
so the decoded prediction is exp(z_i − a − k·s_i²). Decoders, scored against the committee's arithmetic mean (what
`paraisite report --committee` reports) on the same materials:
  geometric  a = k = 0 (nothing fitted)
  factor     k = 0, a fitted
  spread     a and k fitted
  neighbours the arithmetic mean shifted by λ × the mean out-of-fold log residual ln(mean/true) of the material's k
             chemically nearest materials (standardised Magpie statistics of the formula, Euclidean), neighbours
             taken from folds other than the material's and the predicted one; k and λ fitted
  agl        exp(a + (1 − w)·ln mean + w·ln κ_AGL) where AFLOW's AGL table has a value for the material's reduced
             formula, the arithmetic mean elsewhere; w and a fitted on the materials with a value
  bte        the same with the phonon-BTE κ of SevenNet-0's forces (`paraisite bte` tables, --bte) for the prior,
             first centred on the committee (+ the median of ln mean − ln κ_BTE over the materials of each source
             of the set: no label used);
             materials without a trusted BTE κ (flagged, e.g. imaginary modes) keep the arithmetic mean
  bte+unstable  as bte, and the materials SevenNet-0 finds dynamically unstable (flag imaginary_modes) get
             exp(−b)·mean, b fitted on the flagged materials of the other folds (b = 0 where they hold none)
  anharmonic the arithmetic mean times exp(−a − b·σᴬ), σᴬ the anharmonicity of the material's BTE row
             (`paraisite.phonons`; 0 where it has none), a and b ≥ 0 fitted
  bte alone  the centred BTE κ times a factor exp(−a) fitted as above: physics without the networks (printed
             below the table, on the materials with a BTE κ)
Fitting never sees a test label: the materials are split into 5 folds (fixed permutation); each fold's parameters
are the grid point of least MAPE over the other four folds' materials, then applied to the fold.
    python scripts/decode_committee.py outputs/routed_cv … --test dataset1 --member "m3gnet/eform/dft/dataset1 [cv]" …
"""

from __future__ import annotations

import argparse
from functools import cache

import numpy as np

from paraisite.prior import A_GRID, FOLDS, fit_weights, folds_of, kappa_of, mape, physical_kappa
from paraisite.report import experts, find_row, find_runs, repeats_of, summarize
from paraisite.stats import Repeat, bootstrap, ensemble, paired, rng_for

K_NEIGHBOURS = (3, 5, 10)
LAMBDAS = np.round(np.arange(0.0, 1.001, 0.1), 1)
K_GRID = np.round(np.arange(0.0, 4.001, 0.05), 2)
B_GRID = np.round(np.arange(-1.0, 1.501, 0.05), 2)
SIGMA_GRID = np.round(np.arange(0.0, 4.001, 0.05), 2)  # b of the anharmonic decoder
COMMITTEE = " & "  # joins the rows of a committee in a member's spec
UNSTABLE = "imaginary_modes"  # the BTE table's flag of a dynamically unstable lattice
# how each decoder's fit is shown
PARAMS = {"neighbours": "(k {}, λ {:.1f})", "agl": "(w {:.2f}, a {:+.2f})", "bte": "(w {:.2f}, a {:+.2f})",
          "bte+unstable": "(b {:+.2f}){}", "anharmonic": "(a {:+.2f}, b {:.2f})"}


def member_ensemble(rows: list[dict], spec: str, test: str) -> Repeat:
    """The out-of-fold ensemble of one member row (`spec`: a label, "A|B" for the experts of rows A and B, or
    "A & B" for the committee of A and B: per material, the arithmetic mean of their ensembles)."""
    if COMMITTEE in spec:
        return ensemble([member_ensemble(rows, name, test) for name in spec.split(COMMITTEE)])
    names = spec.split("|")
    row = experts(rows, names, "mape", n_boot=1) if len(names) > 1 else find_row(rows, spec)
    return repeats_of(row, as_ensemble=True)["committee"][test]


def fit(z: np.ndarray, s2: np.ndarray, true: np.ndarray, ks: np.ndarray) -> tuple[float, float]:
    """(a, k) of least MAPE of exp(z − a − k·s2) over the grids (k restricted to `ks`)."""
    shift = A_GRID[:, None, None] + ks[None, :, None] * s2[None, None, :]
    scores = np.mean(np.abs(np.exp(z[None, None, :] - shift) - true) / true, axis=-1)
    i, j = np.unravel_index(np.argmin(scores), scores.shape)
    return float(A_GRID[i]), float(ks[j])


def decode(z: np.ndarray, s2: np.ndarray, true: np.ndarray, ks: np.ndarray) -> tuple[np.ndarray, list]:
    """Out-of-fold decoded predictions and each fold's (a, k)."""
    fold = folds_of(len(z))
    pred, params = np.empty_like(z), []
    for f in range(FOLDS):
        a, k = fit(z[fold != f], s2[fold != f], true[fold != f], ks)
        pred[fold == f] = np.exp(z[fold == f] - a - k * s2[fold == f])
        params.append((a, k))
    return pred, params


@cache
def records_by_id(test: str) -> dict:
    """{id: (source, Record)} of the data set `test`, read once."""
    from paraisite.data.datasets import source_path, sources_of
    from paraisite.data.records import read_records

    return {r.id: (s, r) for s in sources_of(test) for r in read_records(source_path(s), on_bad="skip")}


def formulas_of(ids: np.ndarray, test: str) -> list[str]:
    """The formula of each material of the data set `test`, in the order of `ids`."""
    return [records_by_id(test)[i][1].formula for i in ids]


def chemistry(ids: np.ndarray, test: str) -> np.ndarray:
    """Standardised Magpie statistics of each material's formula (rows in the order of `ids`)."""
    from paraisite.models.magpie import MagpieFeaturizer

    x, _ = MagpieFeaturizer().features(formulas_of(ids, test))
    return (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)


def shifts(order: np.ndarray, residual: np.ndarray, fold: np.ndarray, k: int, excluded: tuple[int, ...]) -> np.ndarray:
    """Per material, the mean residual of its k nearest materials outside its own fold and the `excluded` folds."""
    out = np.empty(len(order))
    for i, row in enumerate(order):
        allowed = row[~np.isin(fold[row], (fold[i], *excluded))]
        out[i] = residual[allowed[:k]].mean()
    return out


def neighbours(z: np.ndarray, true: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, list]:
    """Out-of-fold neighbour-corrected predictions exp(z − λ·shift) and each fold's (k, λ)."""
    fold, residual = folds_of(len(z)), z - np.log(true)
    order = np.argsort(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), axis=1)[:, 1:]  # nearest first, not itself
    pred, params = np.empty_like(z), []
    for f in range(FOLDS):
        train = fold != f
        scored = []
        for k in K_NEIGHBOURS:
            shift = shifts(order, residual, fold, k, (f,))
            scored += [(mape(np.exp(z[train] - lam * shift[train]), true[train]), k, lam) for lam in LAMBDAS]
        _, k, lam = min(scored)
        pred[fold == f] = np.exp(z - lam * shifts(order, residual, fold, k, ()))[fold == f]
        params.append((k, lam))
    return pred, params


def agl_prior(ids: np.ndarray, test: str) -> np.ndarray:
    """ln κ of AFLOW's AGL table for each material's reduced formula; NaN where the table has none."""
    from pymatgen.core import Composition

    from paraisite.data.datasets import source_path
    from paraisite.data.records import read_csv_rows

    def reduced(formula: str) -> str:
        return Composition(formula).reduced_formula

    table = {reduced(r["formula"]): float(r["kappa"]) for r in read_csv_rows(source_path("agl_composition"))}
    return np.log(np.array([table.get(reduced(f), np.nan) for f in formulas_of(ids, test)]))


def bte_prior(ids: np.ndarray, test: str, physical: dict, z: np.ndarray) -> np.ndarray:
    """ln κ_BTE of each material centred on the committee's ln predictions `z`, per source of the set (MIX: the
    binaries and the half-Heuslers apart); NaN without a usable BTE κ."""
    prior = np.log(kappa_of(physical, ids))
    group = np.array([records_by_id(test)[i][0] for i in ids])
    for g in np.unique(group):
        known = np.isfinite(prior) & (group == g)
        if known.any():
            prior[group == g] += np.median(z[known] - prior[known])
    return prior


def with_prior(z: np.ndarray, true: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, list]:
    """Out-of-fold predictions exp(a + (1 − w)·z + w·prior) where the prior is known, exp(z) elsewhere; (w, a) per fold."""
    fold, known = folds_of(len(z)), np.isfinite(prior)
    pred, params = np.exp(z), []
    for f in range(FOLDS):
        fit_on, apply = known & (fold != f), known & (fold == f)
        w, a = fit_weights(z[fit_on], prior[fit_on], true[fit_on])
        pred[apply] = np.exp(z[apply] + w * (prior[apply] - z[apply]) + a)
        params.append((w, a))
    return pred, params


def unstable_of(ids: np.ndarray, physical: dict) -> np.ndarray:
    """Whether each material's BTE row (`physical`: `prior.physical_kappa`) is flagged dynamically unstable."""
    return np.array([i in physical and physical[i][2] == UNSTABLE for i in ids])


def anharmonicity_of(ids: np.ndarray, physical: dict) -> np.ndarray:
    """Each material's σᴬ in `physical` (`prior.physical_kappa`), 0 where it has none."""
    return np.array([(physical[i].anharmonicity or 0.0) if i in physical else 0.0 for i in ids], dtype=float)


def with_anharmonicity(pred: np.ndarray, true: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, list]:
    """Out-of-fold `pred` × exp(−a − b·σ), (a, b) of least MAPE over the other folds' materials; (a, b) per fold."""
    fold, out, params = folds_of(len(pred)), np.empty_like(pred), []
    for f in range(FOLDS):
        train = fold != f
        shift = A_GRID[:, None, None] + SIGMA_GRID[None, :, None] * sigma[None, None, train]
        scores = np.mean(np.abs(pred[train] * np.exp(-shift) - true[train]) / true[train], axis=-1)
        i, j = np.unravel_index(np.argmin(scores), scores.shape)
        a, b = float(A_GRID[i]), float(SIGMA_GRID[j])
        out[~train] = pred[~train] * np.exp(-a - b * sigma[~train])
        params.append((a, b))
    return out, params


def with_factor(pred: np.ndarray, true: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list]:
    """`pred` with the materials of `mask` times exp(−b), b of least MAPE on the masked materials of the other
    folds (0 where they hold none); b per fold, with the number of masked materials it was fitted on."""
    fold, out, params = folds_of(len(pred)), pred.copy(), []
    for f in range(FOLDS):
        fit_on, apply = mask & (fold != f), mask & (fold == f)
        b = 0.0
        if fit_on.any():
            scores = [mape(pred[fit_on] * np.exp(-g), true[fit_on]) for g in B_GRID]
            b = float(B_GRID[int(np.argmin(scores))])
        out[apply] = pred[apply] * np.exp(-b)
        params.append((b, f" n {int(fit_on.sum())}"))
    return out, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run or sweep folders")
    parser.add_argument("--test", required=True, help="the test set scored")
    parser.add_argument("--member", action="append", required=True, help="a member row (\"A|B\": experts)")
    parser.add_argument("--name", default="committee", help="the committee's name in the table")
    parser.add_argument("--bte", nargs="+", default=None, help="`paraisite bte` tables of the test set's structures")
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
    decoded["neighbours"] = neighbours(np.log(arithmetic.pred), true, chemistry(ids, args.test))
    priors = {"agl": agl_prior(ids, args.test)}
    if args.bte:
        physical = physical_kappa(args.bte)  # read once
        priors["bte"] = bte_prior(ids, args.test, physical, np.log(arithmetic.pred))
    for name, prior in priors.items():
        decoded[name] = with_prior(np.log(arithmetic.pred), true, prior)
    if args.bte:
        decoded["bte+unstable"] = with_factor(decoded["bte"][0], true, unstable_of(ids, physical))
        sigma = anharmonicity_of(ids, physical)
        decoded["anharmonic"] = with_anharmonicity(arithmetic.pred, true, sigma)
    base = bootstrap([arithmetic], "mape", "kappa", rng_for("decode", args.name, args.test))
    print(f"{args.name} on {args.test} ({len(ids)} materials; members: {', '.join(args.member)})")
    print("| decoder | MAPE [95 % CI] | − arithmetic mean [95 % CI] | p | fitted per fold |")
    print("|---|---|---|---|---|")
    print(f"| arithmetic mean | {base['estimate']:.3f} [{base['lo']:.3f}, {base['hi']:.3f}] | | | |")
    for name, (pred, params) in decoded.items():
        repeat = Repeat("committee", ids, true, pred)
        score = bootstrap([repeat], "mape", "kappa", rng_for("decode", args.name, args.test, name))
        diff = paired([repeat], [arithmetic], "mape", "kappa", rng_for("decode-diff", args.name, args.test, name))
        shown = " ".join(PARAMS.get(name, "({:+.2f}, {:.2f})").format(a, k) for a, k in params)
        print(f"| {name} | {score['estimate']:.3f} [{score['lo']:.3f}, {score['hi']:.3f}] | {diff['diff']:+.3f} "
              f"[{diff['lo']:+.3f}, {diff['hi']:+.3f}] | {diff['p']:.3g} | {shown} |")
    for name, prior in priors.items():
        known = np.isfinite(prior)
        alone = decode(prior[known], np.zeros(known.sum()), true[known], np.zeros(1))[0]
        candidates = {name: decoded[name][0][known], f"{name} alone": alone} if name == "bte" else \
            {name: decoded[name][0][known]}
        base = Repeat("committee", ids[known], true[known], arithmetic.pred[known])
        for label, pred in candidates.items():
            diff = paired([Repeat("committee", ids[known], true[known], pred)], [base], "mape", "kappa",
                          rng_for("decode-diff", args.name, args.test, f"{label}-part"))
            print(f"{label} on the {known.sum()} materials the {name} prior covers: {mape(base.pred, base.true):.3f}"
                  f" → {mape(pred, base.true):.3f}, {diff['diff']:+.3f} [{diff['lo']:+.3f}, {diff['hi']:+.3f}] "
                  f"(p {diff['p']:.3g}); Spearman ρ(prior, true) {spearman(prior[known], true[known]):+.2f}")
    if args.bte:
        a, b = (Repeat("committee", ids, true, decoded[name][0]) for name in ("bte+unstable", "bte"))
        diff = paired([a], [b], "mape", "kappa", rng_for("decode-diff", args.name, args.test, "unstable-bte"))
        print(f"bte+unstable − bte: {diff['diff']:+.3f} [{diff['lo']:+.3f}, {diff['hi']:+.3f}] (p {diff['p']:.3g})")
        known = sigma > 0
        print(f"σᴬ known for {known.sum()} of {len(ids)} materials (median {np.median(sigma[known]):.2f}); Spearman "
              f"ρ(σᴬ, ln(arithmetic/true)) {spearman(sigma[known], np.log(arithmetic.pred / true)[known]):+.2f}")
    print(f"median s (members' spread in ln κ): {np.median(np.sqrt(s2)):.2f}; "
          f"Spearman ρ(s², ln(arithmetic/true)): {spearman(s2, np.log(arithmetic.pred / true)):+.2f}")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1])


if __name__ == "__main__":
    main()
