"""Batched inference on a data module's split: predictions per record and test metrics."""

from __future__ import annotations

import numpy as np
import torch

from paraisite.metrics import regression_metrics

PREDICTION_COLUMNS = ("id", "formula", "test_set", "fold", "seed", "target", "prediction")  # test_predictions.csv


@torch.inference_mode()
def predict_split(module, datamodule, split: str = "test", batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) targets over a split, in the split's order (`datamodule.splits[split]`)."""
    module.eval()
    device = module.device
    true, pred = [], []
    for batch in datamodule.loader(split, batch_size=batch_size):
        batch = module.transfer_batch_to_device(batch, device, 0)
        true.append(batch.y.double().cpu())
        pred.append(module.predict_target(batch).double().cpu())
    if not true:
        return np.zeros(0), np.zeros(0)
    return torch.cat(true).numpy(), torch.cat(pred).numpy()


def test_metrics(module, datamodule) -> dict:
    return scored_test_split(module, datamodule, "", None, 0)[0]


def scored_test_split(module, datamodule, test_set: str, fold: int | None, seed: int) -> tuple[dict, list[dict]]:
    """(metrics, one row per test record: PREDICTION_COLUMNS) of the final model on the test split."""
    true, pred = predict_split(module, datamodule, "test")
    metrics = regression_metrics(true, pred, module.target.kind)
    metrics["dropped"] = sum(d["split"] == "test" for d in datamodule.dropped)
    index = datamodule.splits["test"]
    rows = [{"id": datamodule.data.ids[i], "formula": datamodule.data.formulas[i], "test_set": test_set, "fold": fold,
             "seed": seed, "target": float(t), "prediction": float(p)} for i, t, p in zip(index, true, pred)]
    return metrics, rows
