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


def test_metrics(module, datamodule, true: np.ndarray | None = None, pred: np.ndarray | None = None) -> dict:
    """Metrics of the model on the test split (of its given predictions `true`, `pred`), with the count of test
    records dropped as bad."""
    if true is None:
        true, pred = predict_split(module, datamodule, "test")
    return {**regression_metrics(true, pred, module.target.kind),
            "dropped": sum(d["split"] == "test" for d in datamodule.dropped)}


def scored_split(module, datamodule, split: str, test_set: str, fold: int | None,
                 seed: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(true, predicted, one row per record: PREDICTION_COLUMNS) of the model on a split of the data module."""
    true, pred = predict_split(module, datamodule, split)
    index = datamodule.splits[split]
    rows = [{"id": datamodule.data.ids[i], "formula": datamodule.data.formulas[i], "test_set": test_set, "fold": fold,
             "seed": seed, "target": float(t), "prediction": float(p)} for i, t, p in zip(index, true, pred)]
    return true, pred, rows
