"""Why the ElemNet source model has no dropout: short trainings of the formation-energy source model with and without
upstream's dropout, on the source split (formula-level, ground state per formula), in a bare PyTorch loop (1 thread).

    python bench/source_dropout.py --epochs 8 --dropouts 0.2,0.1,0.3,0.2,0,0 0,0,0,0,0,0

Prints one JSON line per epoch: mean training MAE (dropout active), validation MAE, the best one so far and its test
MAE (eV/atom). Same optimiser as `paraisite.source`: Adam, L1 on the standardised target, warm-up then cosine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from paraisite.data.composition import CompositionFeaturizer  # noqa: E402
from paraisite.data.datamodule import LTCDataModule  # noqa: E402
from paraisite.models.elemnet import ElemNetBackbone  # noqa: E402
from paraisite.models.regressor import cosine_decay  # noqa: E402


def run(dm: LTCDataModule, dropouts: list[float], epochs: int, lr: float, batch: int, weight_decay: float) -> None:
    x, y = dm.data.x, dm.data.target.float()
    train, val, test = (torch.as_tensor(dm.splits[k]) for k in ("train", "val", "test"))
    mean, std = y[train].mean(), y[train].std()
    torch.manual_seed(0)
    backbone, head = ElemNetBackbone(dropouts=dropouts), torch.nn.Linear(32, 1)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(train) / batch)
    steps, warm = epochs * per_epoch, 2 * per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_decay(s, steps - warm, 0.01, warm))

    def mae(idx: torch.Tensor) -> float:
        backbone.eval()
        with torch.no_grad():
            pred = torch.cat([head(backbone.layers(x[idx[i:i + 4096]])).squeeze(-1) for i in range(0, len(idx), 4096)])
        backbone.train()
        return float((pred * std + mean - y[idx]).abs().mean())

    best, started = (math.inf, -1, math.nan), time.perf_counter()
    for epoch in range(epochs):
        order, total = train[torch.randperm(len(train))], 0.0
        for i in range(0, len(order), batch):
            b = order[i:i + batch]
            loss = (head(backbone.layers(x[b])).squeeze(-1) - (y[b] - mean) / std).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(b)
        v = mae(val)
        if v < best[0]:
            best = (v, epoch + 1, mae(test))
        print(json.dumps({"dropouts": dropouts, "epoch": epoch + 1, "train_mae": round(total / len(train) * float(std), 4),
                          "val_mae": round(v, 4), "best": {"val_mae": round(best[0], 4), "epoch": best[1],
                                                           "test_mae": round(best[2], 4)},
                          "s": round(time.perf_counter() - started)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dropouts", nargs="+", default=["0.2,0.1,0.3,0.2,0,0", "0,0,0,0,0,0"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--weight-decay", type=float, default=0.0, help="decoupled (AdamW); 0: plain Adam")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dm = LTCDataModule("mp_e_form", CompositionFeaturizer(), seed=0, test_fraction=0.1, val_fraction=0.1,
                       on_bad="skip", group_by="formula", per_formula="lowest")
    dm.setup("fit")
    for dropouts in args.dropouts:
        run(dm, [float(p) for p in dropouts.split(",")], args.epochs, args.lr, args.batch_size, args.weight_decay)


if __name__ == "__main__":
    main()
