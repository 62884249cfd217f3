"""Batched inference and test metrics of a trained model on a data module's split."""

from __future__ import annotations

import numpy as np
import torch

from paraisite.metrics import regression_metrics


@torch.inference_mode()
def predict_split(module, datamodule, split: str = "test", batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) targets over a split, in the split's order."""
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
    true, pred = predict_split(module, datamodule, "test")
    metrics = regression_metrics(true, pred, module.target.kind)
    metrics["dropped"] = sum(d["split"] == "test" for d in datamodule.dropped)
    return metrics
