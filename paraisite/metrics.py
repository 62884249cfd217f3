"""Test metrics. κ: MAPE (a fraction, as published) and MAE on the κ scale, MAE/RMSE/R² on the log10 scale,
Spearman ρ. Any other property: MAE (the headline), RMSE, R², Spearman ρ in the target's units."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def r2_score(true: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(((true - true.mean()) ** 2).sum())
    return float(1 - ((pred - true) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def regression_metrics(true, pred, kind: str = "kappa") -> dict[str, float]:
    """Metrics of a `kind` target (a `Target.kind`); κ scores on the κ and log10(κ+1) scales."""
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    n = len(true)
    if n == 0:
        return {"n": 0}
    metrics = {"mae": float(np.mean(np.abs(pred - true)))}
    if kind == "kappa":
        log_true, log_pred = np.log10(true + 1), np.log10(np.clip(pred, -1 + 1e-12, None) + 1)
        metrics.update(mape=float(np.mean(np.abs(pred - true) / np.abs(true))),
                       log_mae=float(np.mean(np.abs(log_pred - log_true))),
                       log_rmse=float(np.sqrt(np.mean((log_pred - log_true) ** 2))),
                       r2=r2_score(log_true, log_pred))
    else:
        metrics.update(rmse=float(np.sqrt(np.mean((pred - true) ** 2))), r2=r2_score(true, pred))
    metrics["spearman"] = float(spearmanr(true, pred).statistic) if n > 2 else float("nan")
    metrics["n"] = n
    return metrics
