"""Micro-benchmark of the MEGNet-Eform backbone alone: our backbone vs matgl's stock model on the same AGL batches,
forward (no grad) and forward + backward, interleaved, process CPU seconds per batch (medians).

    python bench/megnet_step.py [--batch-sizes 8 32 128] [--batches 20] [--repeats 5] [--threads 1]
Prints only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import stock_megnet  # noqa: E402
from bench.train import datamodule  # noqa: E402


def seconds(fn, batches) -> float:
    start = time.process_time()
    for batch in batches:
        fn(batch)
    return (time.process_time() - start) / len(batches)


def main() -> None:
    from paraisite.models.megnet import MEGNetBackbone
    from paraisite.task import quiet_third_party

    quiet_third_party()
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours, stock = MEGNetBackbone(), stock_megnet()

    def run(model, batch, backward):
        state = ours.state_attr(batch)
        with torch.set_grad_enabled(backward):
            out = model(batch) if model is ours else model(batch, state_attr=state)
        if backward:
            out.sum().backward()

    for size in args.batch_sizes:
        loader = datamodule("agl", ours.featurizer(), size).train_dataloader()
        batches = [b for b, _ in zip(loader, range(args.batches))]
        edges = sum(b.edge_index.shape[1] for b in batches) / len(batches)
        for backward in (False, True):
            times = {"matgl": [], "ours": []}
            for _ in range(args.repeats):
                for name, model in (("matgl", stock), ("ours", ours)):
                    times[name].append(seconds(lambda b: run(model, b, backward), batches))
            t = {k: statistics.median(v) for k, v in times.items()}
            print(f"batch {size:4d} (~{edges:.0f} edges) {'fwd+bwd' if backward else 'forward':8s} "
                  f"matgl {1e3 * t['matgl']:7.2f} ms  ours {1e3 * t['ours']:7.2f} ms  "
                  f"matgl/ours {t['matgl'] / t['ours']:.2f}×", flush=True)


if __name__ == "__main__":
    main()
