"""Where the time goes: one MEGNet training epoch on AGL (phases of a step, forward time per MEGNet part, the top
ATen ops) and one inference pass over the MP scan (the same per part and per op). Prints; the summary is in
docs/benchmarks.md.

    python bench/profiling.py [--batch-size 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import model_folder, screening_records  # noqa: E402
from bench.train import build, datamodule  # noqa: E402


def time_parts(module) -> dict[str, float]:
    """Forward CPU seconds per MEGNet part and the head, accumulated by hooks (1 thread: exclusive and exact)."""
    megnet, spent, started = module.backbone.model, defaultdict(float), {}
    parts = {"bond expansion": [megnet.bond_expansion], "edge encoder": [megnet.edge_encoder],
             "node + state encoders": [megnet.node_encoder, megnet.state_encoder, megnet.embedding],
             "3 MEGNet blocks": list(megnet.blocks), "Set2Set (nodes + edges)": [megnet.node_s2s, megnet.edge_s2s],
             "output MLP": [megnet.output_proj], "our MLP head": [module.head], "MEGNet total": [megnet]}
    for name, mods in parts.items():
        for mod in mods:
            mod.register_forward_pre_hook(lambda m, i, name=name: started.__setitem__(name, time.process_time()))
            mod.register_forward_hook(lambda m, i, o, name=name: spent.__setitem__(
                name, spent[name] + time.process_time() - started[name]))
    return spent


def report(title: str, total: float, rows: dict[str, float], prof) -> None:
    print(f"\n{title}: {total:.2f} s")
    for name, seconds in rows.items():
        print(f"  {name:26s} {seconds:7.2f} s {100 * seconds / total:5.1f} %")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def training_epoch(batch_size: int) -> None:
    from paraisite.recipe import stages_of

    cfg, module = build()
    dm = datamodule("agl", module.backbone.featurizer(), batch_size)
    module.start_stage(stages_of(cfg)[0], dm.targets("train"))
    optimizer = module.configure_optimizers()["optimizer"]
    parts, phases = time_parts(module), defaultdict(float)
    module.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = mark = time.process_time()
        for batch in dm.train_dataloader():
            now = time.process_time()
            phases["collate"], mark = phases["collate"] + now - mark, now
            optimizer.zero_grad()
            loss = module.loss(module(batch), batch.y)
            now = time.process_time()
            phases["forward"], mark = phases["forward"] + now - mark, now
            loss.backward()
            now = time.process_time()
            phases["backward"], mark = phases["backward"] + now - mark, now
            optimizer.step()
            now = time.process_time()
            phases["optimizer"], mark = phases["optimizer"] + now - mark, now
        total = time.process_time() - start
    report(f"AGL training epoch, batch {batch_size} (profiler on)", total, {**phases, **parts}, prof)


def inference_pass() -> None:
    from pymatgen.core import Structure

    from paraisite.data.records import Record
    from paraisite.predict import featurize, featurizers_of, infer, load_ensemble

    rows = screening_records(2228)
    records = [Record(r["id"], None, None, Structure.from_dict(r["structure"])) for r in rows]
    (member,) = load_ensemble([model_folder(Path(tempfile.mkdtemp()))])
    start = time.process_time()
    features = featurize(records, featurizers_of([member]))
    graphs = time.process_time() - start
    parts = time_parts(member.module)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.process_time()
        infer([member], features, len(records))
        total = time.process_time() - start
    report(f"MP scan inference, {len(records)} structures, batch 128 (graph building apart: {graphs:.2f} s)",
           total, parts, prof)


def main() -> None:
    from paraisite.task import quiet_third_party

    quiet_third_party()
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    training_epoch(args.batch_size)
    inference_pass()


if __name__ == "__main__":
    main()
