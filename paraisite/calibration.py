"""MAPE calibration: one factor c that scales a κ model's predictions, fitted on its validation split.

A network trained on the MAPE fits its training records closely, so on new materials its errors are far wider than
on those it trained on, and the MAPE penalises an over-prediction without bound but an under-prediction by at most 1.
Under such an error the MAPE-optimal prediction lies below the typical one (for a log-normal error of width σ in ln κ,
by a factor e^(−σ²)). The factor that minimises the MAPE of `c · pred` on records the model did not train on has a
closed form: Σ |c·p − y| / y = Σ (p/y) · |c − y/p|, so c is the median of the ratios y/p weighted by p/y.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from paraisite.errors import ParaisiteError


@dataclass(frozen=True)
class Calibration:
    """The factor a run's final model multiplies its κ predictions by, and the validation records it was fitted on."""

    scale: float = 1.0
    n_val: int = 0
    val_mape_raw: float = float("nan")
    val_mape: float = float("nan")  # with the factor

    def to_json(self) -> dict:
        return asdict(self)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The smallest value at which the cumulative weight reaches half the total (a minimiser of Σ w|c − v|)."""
    order = np.argsort(values)
    values, cumulative = values[order], np.cumsum(weights[order])
    return float(values[np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def mape_scale(true, pred) -> float:
    """The factor c minimising mean |c·pred − true| / true (true > 0, pred > 0)."""
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    usable = (true > 0) & (pred > 0) & np.isfinite(pred)
    if not usable.any():
        raise ParaisiteError("calibration: no validation record with a positive target and prediction")
    true, pred = true[usable], pred[usable]
    return weighted_median(true / pred, pred / true)


def fit_calibration(true, pred) -> Calibration:
    """The calibration of predictions `pred` of validation targets `true`."""
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    scale = mape_scale(true, pred)
    return Calibration(scale=scale, n_val=len(true), val_mape_raw=float(np.mean(np.abs(pred - true) / true)),
                       val_mape=float(np.mean(np.abs(scale * pred - true) / true)))
