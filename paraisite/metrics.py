"""Metrics on the κ scale (MAPE as a fraction, MAE) and on the log10 scale (MAE, RMSE, R²), and Spearman ρ."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def regression_metrics(true, pred) -> dict[str, float]:
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    n = len(true)
    if n == 0:
        return {"n": 0}
    log_true, log_pred = np.log10(true + 1), np.log10(np.clip(pred, -1 + 1e-12, None) + 1)
    ss_tot = float(((log_true - log_true.mean()) ** 2).sum())
    return {
        "mape": float(np.mean(np.abs(pred - true) / np.abs(true))),
        "mae": float(np.mean(np.abs(pred - true))),
        "log_mae": float(np.mean(np.abs(log_pred - log_true))),
        "log_rmse": float(np.sqrt(np.mean((log_pred - log_true) ** 2))),
        "r2": float(1 - ((log_pred - log_true) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "spearman": float(spearmanr(true, pred).statistic) if n > 2 else float("nan"),
        "n": n,
    }
