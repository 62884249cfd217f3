"""Prediction intervals for κ by split conformal prediction on log ratios.

A model's out-of-fold predictions of a data set give residuals r = |ln(predicted / true)|; the interval of level L
around a new prediction p is [p·e^−q, p·e^q], q the ⌈(n + 1)·L⌉-th smallest of the n residuals. For a new material
drawn like the calibration materials (exchangeable with them) it holds the true κ with probability ≥ L; for anything
else (another structure family, another chemistry) it is a guess of the width, no guarantee.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from paraisite.errors import ParaisiteError


@dataclass(frozen=True)
class Interval:
    """A calibrated interval: level, half-width in ln κ, the number of calibration materials and what they were."""

    level: float
    ln_halfwidth: float
    n_calibration: int
    calibrated_on: str

    def bounds(self, prediction: float) -> tuple[float, float]:
        return prediction * math.exp(-self.ln_halfwidth), prediction * math.exp(self.ln_halfwidth)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Interval:
        return cls(float(data["level"]), float(data["ln_halfwidth"]), int(data["n_calibration"]),
                   str(data["calibrated_on"]))


def log_residuals(true, pred) -> np.ndarray:
    true, pred = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    if not (len(true) == len(pred) and (true > 0).all() and (pred > 0).all()):
        raise ParaisiteError("conformal calibration needs as many true as predicted values, all > 0")
    return np.abs(np.log(pred / true))


def conformal(true, pred, level: float, calibrated_on: str) -> Interval:
    """The interval of `level` from calibration predictions `pred` of targets `true` (out of fold)."""
    residuals = np.sort(log_residuals(true, pred))
    n = len(residuals)
    rank = math.ceil((n + 1) * level)
    if not 0 < level < 1 or rank > n:
        raise ParaisiteError(f"a {level:g} interval needs 0 < level < 1 and at least {math.ceil(level / (1 - level))} "
                             f"calibration materials ({calibrated_on}: {n})")
    return Interval(level, float(residuals[rank - 1]), n, calibrated_on)


def coverage_out_of_fold(true, pred, level: float, folds: int = 5, seed: int = 0) -> dict:
    """How the calibration holds on materials it did not see: the materials split into `folds`, each fold's interval
    calibrated on the others; {coverage: the fraction of true values inside, width: the median hi/lo ratio}."""
    true, pred = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    fold = np.random.default_rng(seed).permutation(len(true)) % folds
    inside, widths = np.zeros(len(true), dtype=bool), np.zeros(len(true))
    for f in range(folds):
        interval = conformal(true[fold != f], pred[fold != f], level, "other folds")
        inside[fold == f] = log_residuals(true[fold == f], pred[fold == f]) <= interval.ln_halfwidth
        widths[fold == f] = math.exp(2 * interval.ln_halfwidth)
    return {"coverage": float(inside.mean()), "width": float(np.median(widths)), "n": len(true), "folds": folds}


def out_of_fold_ensemble(configs: list[dict], cv_rows: list[dict]):
    """(description, `stats.Repeat`): the out-of-fold ensemble (the mean over repeats of each material's prediction
    by the fold model that never saw it) of the cv row of each config's recipe (a run's recorded config) among
    `cv_rows` (`report.summarize` rows), on the data set it trains on; of several recipes (a committee), per material
    the mean of their ensembles."""
    from paraisite.report import cv_row_of, label, repeats_of
    from paraisite.stats import ensemble

    described, ensembles = [], []
    for config in configs:
        row = cv_row_of(cv_rows, config)
        own = repeats_of(row, as_ensemble=True)["committee"].get(row["data"])
        if own is None:
            raise ParaisiteError(f"{label(row)}: no out-of-fold predictions of its own data set {row['data']}")
        described.append(f"{label(row)}: out-of-fold ensemble of {len(row['_repeats'])} repeat(s), "
                         f"{len(own.true)} materials")
        ensembles.append(own)
    if len(ensembles) == 1:
        return described[0], ensembles[0]
    return f"committee, per material the mean of {'; '.join(described)}", ensemble(ensembles)


def calibrate_for(configs: list[dict], cv_rows: list[dict], level: float) -> Interval:
    """The interval of the models trained with `configs`' recipes, calibrated on their `out_of_fold_ensemble`."""
    described, own = out_of_fold_ensemble(configs, cv_rows)
    return conformal(own.true, own.pred, level, described)
