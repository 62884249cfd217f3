"""Uncertainty of test metrics: bootstrap over materials and paired comparisons of two models.

A *repeat* is one seed's test predictions of a row: for protocol `cv` the pooled out-of-fold predictions of its k
fold runs (every record once), for `holdout`/`paper` the one run's test split. A metric of a row is the mean over
repeats of the metric on each repeat's predictions (`regression_metrics`). The *ensemble* of a row's repeats
(`ensemble`) averages their predictions per material: of cv repeats, the out-of-fold error of the seeds' ensemble.

Intervals resample *materials* (ids) with replacement — the same resampled ids for every repeat, and for both rows
of a comparison (paired) — recompute each repeat's metric on the resample (a material drawn twice counts twice),
average over repeats and take the 2.5/97.5 percentiles (percentile bootstrap, seeded). They say how much the
number depends on which materials happen to be in the data; training noise enters through the average over repeats
(the std over repeats is in `table.csv`). Every metric is computed on a whole resample at once (numpy, weights =
how often each material was drawn), so 2000 resamples of thousands of materials take a second or so.

The p-value of a paired comparison is a **paired permutation (sign-flip) test**: under the null hypothesis that the
two models are interchangeable on every material, swapping A's and B's predictions of a material (the same swap in
every repeat) leaves the distribution of the difference unchanged; p = (1 + #{|Δ_perm| ≥ |Δ|}) / (1 + N_perm),
two-sided. It is exact under that null (no assumption on the shape of the error distribution), works for every
metric (MAPE, MAE, log metrics, R², Spearman: the metric is recomputed on the swapped predictions, not averaged
per material), and gives p = 1 for identical predictions; the smallest p it can give is 1/(1 + N_perm) ≈ 0.0005.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from paraisite.metrics import regression_metrics

N_BOOTSTRAP = 2000
N_PERMUTATIONS = 2000
LEVEL = 0.95
CHUNK = 2_000_000  # resamples × materials held at once
HIGHER_IS_BETTER = {"r2", "spearman"}


@dataclass
class Repeat:
    """One seed's test predictions on one test set (ids unique)."""

    seed: object
    ids: np.ndarray
    true: np.ndarray
    pred: np.ndarray

    def subset(self, keep: np.ndarray) -> Repeat:
        return Repeat(self.seed, self.ids[keep], self.true[keep], self.pred[keep])


def ensemble(repeats: list[Repeat]) -> Repeat:
    """The repeats' predictions averaged per material (id; a material in some repeats only: the mean of those).
    Of cv repeats, each material's out-of-fold predictions (per seed, by the one fold model that never saw it), so
    the metric of the result is the out-of-fold error of the seeds' ensemble."""
    universe, positions = _positions(repeats)
    total, count, true = np.zeros(len(universe)), np.zeros(len(universe)), np.zeros(len(universe))
    for repeat, position in zip(repeats, positions):
        total[position] += repeat.pred
        count[position] += 1
        true[position] = repeat.true
    return Repeat(tuple(r.seed for r in repeats), universe, true, total / count)


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by `key` (a row label, a test set…): an interval does not change when rows are added."""
    return np.random.default_rng(zlib.crc32("\x1f".join(map(str, key)).encode()))


def point_metric(repeat: Repeat, metric: str, kind: str) -> float:
    return float(regression_metrics(repeat.true, repeat.pred, kind).get(metric, np.nan))


def weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks (ties averaged, as scipy's) of x's rows in the sample where element j appears w[.., j] times;
    x (n,) — sorted once — or (B, n), w broadcastable to (B, n)."""
    w = np.atleast_2d(np.asarray(w, np.float64))
    if np.ndim(x) == 1:
        n = len(x)
        order = np.argsort(x)
        xs = np.asarray(x)[order]
        new = np.r_[True, xs[1:] != xs[:-1]]
        group = np.cumsum(new) - 1
        bounds = np.r_[np.flatnonzero(new), n]
        cum = np.cumsum(w[:, order], axis=1)
        before = np.concatenate([np.zeros((len(cum), 1)), cum], axis=1)
        start, end = before[:, bounds[:-1]], before[:, bounds[1:]]  # weight before / through each tie group
        ranks = np.empty_like(cum)
        ranks[:, order] = ((start + end + 1) / 2)[:, group]
        return ranks
    x, w = np.broadcast_arrays(x, w)
    n = x.shape[1]
    order = np.argsort(x, axis=1)
    xs, ws = np.take_along_axis(x, order, 1), np.take_along_axis(w, order, 1)
    cum = np.cumsum(ws, axis=1)
    position = np.broadcast_to(np.arange(n), xs.shape)
    new = np.ones(xs.shape, bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    last = np.ones(xs.shape, bool)
    last[:, :-1] = new[:, 1:]
    first_of_group = np.maximum.accumulate(np.where(new, position, 0), axis=1)
    last_of_group = np.minimum.accumulate(np.where(last, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
    start = np.take_along_axis(cum - ws, first_of_group, 1)  # weight before the tie group
    end = np.take_along_axis(cum, last_of_group, 1)  # weight through the tie group
    ranks = np.empty_like(cum)
    np.put_along_axis(ranks, order, (start + end + 1) / 2, 1)
    return ranks


def batch_metric(metric: str, kind: str, true, pred, weights=None) -> np.ndarray:
    """`regression_metrics(true, pred, kind)[metric]` for many samples at once: `pred` (n,) or (B, n), `weights`
    (B, n) counts (None: each record once). Equals regression_metrics on the sample where record j appears
    weights[b, j] times. NaN where the metric is undefined (or not one of the kind's metrics)."""
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    given = true, pred
    shape = np.broadcast_shapes(true.shape, pred.shape, () if weights is None else np.shape(weights))
    w = np.ones(shape) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), shape)
    true, pred = np.broadcast_to(true, shape), np.broadcast_to(pred, shape)
    total = w.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        def mean(x):
            return (w * x).sum(-1) / total

        def r2(t, p):
            centre = mean(t)[..., None]
            ss_tot = (w * (t - centre) ** 2).sum(-1)
            return np.where(ss_tot > 0, 1 - (w * (p - t) ** 2).sum(-1) / np.where(ss_tot > 0, ss_tot, 1), np.nan)

        if kind == "kappa" and metric in ("log_mae", "log_rmse", "r2"):
            log_true, log_pred = np.log10(true + 1), np.log10(np.clip(pred, -1 + 1e-12, None) + 1)
            if metric == "log_mae":
                out = mean(np.abs(log_pred - log_true))
            elif metric == "log_rmse":
                out = np.sqrt(mean((log_pred - log_true) ** 2))
            else:
                out = r2(log_true, log_pred)
        elif metric == "mae":
            out = mean(np.abs(pred - true))
        elif metric == "mape" and kind == "kappa":
            out = mean(np.abs(pred - true) / np.abs(true))
        elif metric == "rmse" and kind != "kappa":
            out = np.sqrt(mean((pred - true) ** 2))
        elif metric == "r2":
            out = r2(true, pred)
        elif metric == "spearman":
            flat = w.reshape(-1, shape[-1])  # a fixed vector is sorted once (bootstrap), a batch row by row
            rt, rp = (weighted_ranks(v if v.ndim == 1 else np.broadcast_to(v, shape).reshape(flat.shape), flat)
                      .reshape(shape) for v in given)
            dt, dp = rt - mean(rt)[..., None], rp - mean(rp)[..., None]
            out = (w * dt * dp).sum(-1) / np.sqrt((w * dt ** 2).sum(-1) * (w * dp ** 2).sum(-1))
            out = np.where(total > 2, out, np.nan)
        else:
            out = np.full(shape[:-1], np.nan)
    return np.where(total > 0, out, np.nan)


def _positions(repeats: list[Repeat]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The materials (union of the repeats' ids) and each repeat's records' positions among them."""
    universe = np.unique(np.concatenate([r.ids for r in repeats]))
    return universe, [np.searchsorted(universe, r.ids) for r in repeats]


def _draws(rng: np.random.Generator, m: int, n: int):
    """Resample counts (b, m) of `m` materials, n resamples in chunks."""
    step = max(1, CHUNK // max(m, 1))
    for done in range(0, n, step):
        b = min(step, n - done)
        draws = rng.integers(0, m, size=(b, m))
        yield np.bincount((np.arange(b)[:, None] * m + draws).ravel(), minlength=b * m).reshape(b, m)


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(lo), float(hi)


def bootstrap(repeats: list[Repeat], metric: str, kind: str, rng: np.random.Generator,
              n: int = N_BOOTSTRAP) -> dict:
    """{estimate: mean over repeats, lo, hi: 95 % bootstrap interval over materials, per_repeat, n_materials}."""
    per_repeat = [point_metric(r, metric, kind) for r in repeats]
    estimate = float(np.mean(per_repeat)) if repeats else float("nan")
    if not repeats:
        return {"estimate": estimate, "lo": np.nan, "hi": np.nan, "per_repeat": [], "n_materials": 0}
    universe, positions = _positions(repeats)
    samples = []
    for counts in _draws(rng, len(universe), n):
        values = [batch_metric(metric, kind, r.true, r.pred, counts[:, pos]) for r, pos in zip(repeats, positions)]
        samples.append(_nanmean(np.stack(values)))
    lo, hi = _interval(np.concatenate(samples))
    return {"estimate": estimate, "lo": lo, "hi": hi, "per_repeat": per_repeat, "n_materials": len(universe)}


def _nanmean(stack: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN (a resample that missed a repeat's records), NaN where all are."""
    finite = np.isfinite(stack)
    count = finite.sum(0)
    return np.where(count > 0, np.where(finite, stack, 0).sum(0) / np.maximum(count, 1), np.nan)


def paired(a: list[Repeat], b: list[Repeat], metric: str, kind: str, rng: np.random.Generator,
           n_boot: int = N_BOOTSTRAP, n_perm: int = N_PERMUTATIONS) -> dict:
    """A − B on the same materials: `a[i]` and `b[i]` are one repeat (seed) of each row with the same ids in the same
    order. {a, b: means over repeats, diff, lo, hi (paired bootstrap over materials), p (permutation test)}."""
    diffs = [point_metric(x, metric, kind) - point_metric(y, metric, kind) for x, y in zip(a, b)]
    out = {"a": float(np.mean([point_metric(x, metric, kind) for x in a])),
           "b": float(np.mean([point_metric(y, metric, kind) for y in b])),
           "diff": float(np.mean(diffs)), "per_repeat": diffs}
    universe, positions = _positions(a)
    m = len(universe)
    samples = []
    for counts in _draws(rng, m, n_boot):
        values = [batch_metric(metric, kind, x.true, x.pred, counts[:, p]) -
                  batch_metric(metric, kind, y.true, y.pred, counts[:, p]) for x, y, p in zip(a, b, positions)]
        samples.append(_nanmean(np.stack(values)))
    out["lo"], out["hi"] = _interval(np.concatenate(samples))
    extreme, step = 0, max(1, CHUNK // max(m, 1))
    tolerance = 1e-12 * max(1.0, abs(out["diff"]))
    for done in range(0, n_perm, step):
        swap = rng.random((min(step, n_perm - done), m)) < 0.5  # per material, the same in every repeat
        values = []
        for x, y, p in zip(a, b, positions):
            s = swap[:, p]
            values.append(batch_metric(metric, kind, x.true, np.where(s, y.pred, x.pred)) -
                          batch_metric(metric, kind, y.true, np.where(s, x.pred, y.pred)))
        permuted = _nanmean(np.stack(values))
        extreme += int(np.sum(np.abs(permuted) >= abs(out["diff"]) - tolerance))
    out["p"] = (1 + extreme) / (1 + n_perm) if np.isfinite(out["diff"]) else float("nan")
    out["p"] = min(1.0, out["p"])
    out["n_materials"] = m
    return out
