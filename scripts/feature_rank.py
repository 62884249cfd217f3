"""Which ElemNet layer to extract features from: per hidden layer, the units that vary and the effective rank
(participation ratio of the singular values) of the cached source model's activations on a dataset's training split.

    python scripts/feature_rank.py crossprop/expt_bandgap [--source mp_e_form]
(source-training settings: the CPU budget of `make bench-crossprop`, so the cached model is reused)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from paraisite.data.datamodule import LTCDataModule  # noqa: E402
from paraisite.models.elemnet import ElemNetBackbone  # noqa: E402
from paraisite.settings import SourceTraining  # noqa: E402
from paraisite.source import pretrain  # noqa: E402

CPU_SOURCE = SourceTraining(epochs=25, batch_size=512, lr=5e-4, patience=5, seed=0, test_fraction=0.1,
                            val_fraction=0.1, limit=None)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    parser.add_argument("--source", default="mp_e_form")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    backbone = ElemNetBackbone(weights=str(pretrain(ElemNetBackbone, args.source, CPU_SOURCE))).eval()
    dm = LTCDataModule(args.dataset, backbone.featurizer(), seed=args.seed, on_bad="skip")
    dm.setup()
    h, layer = dm.data.x[dm.splits["train"]], 0
    print(f"{args.dataset}, {len(h)} training formulas, source {args.source}\n| layer | width | varying units | effective rank |\n|---|---|---|---|")
    for module in backbone.layers:
        h = module(h)
        if isinstance(module, torch.nn.ReLU):
            layer += 1
            s = torch.linalg.svdvals(h - h.mean(0))
            rank = float(s.sum() ** 2 / (s**2).sum())
            print(f"| {layer} | {h.shape[1]} | {int((h.std(0) > 1e-6).sum())} | {rank:.1f} |")


if __name__ == "__main__":
    main()
