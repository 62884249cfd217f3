"""Peer comparison in one run: our training stage vs matgl's own training utilities (`ModelLightningModule` with
`MGLDataset` / `MGLDataLoader` / `collate_fn_graph`), and our batched prediction vs matgl's per-structure
`predict_structure` loop; the same published Eform model (MEGNet, then M3GNet; + the same MLP head for training) and
the same structures.

    python bench/peer.py [--backbones megnet m3gnet] [--epochs 2] [--repeats 3] [--batch-size 8] [--n 1000]
Both sides run interleaved in this one process on `--threads` torch threads without loader worker processes, timed
in process CPU seconds (equal to wall time on an idle machine, far less disturbed by other jobs on a shared one).
Writes the `peer` section of docs/benchmarks.md and docs/results/bench.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DOC, machine, screening_records, stock_m3gnet, stock_megnet, write_section  # noqa: E402
from bench.train import build, datamodule, our_stage  # noqa: E402

COMMAND = "make bench (python bench/peer.py)"


class EpochClock:
    """CPU-time marks at every training epoch start and at the end of training (a Lightning callback)."""

    def __init__(self):
        import lightning as L

        clock = self

        class Marks(L.Callback):
            def on_train_epoch_start(self, trainer, module):
                clock.marks.append(time.process_time())

            def on_train_end(self, trainer, module):
                clock.marks.append(time.process_time())

        self.marks: list[float] = []
        self.callback = Marks()

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


# backbone → (its name in the table, matgl's stock model, the model's last MLP)
STOCK = {"megnet": ("MEGNet", stock_megnet, "output_proj"), "m3gnet": ("M3GNet", stock_m3gnet, "final_layer")}


class MatglNet(nn.Module):
    """matgl's stock Eform model cut before its last layer + our MLP head, in the call form matgl's loop uses."""

    def __init__(self, backbone: str, head: nn.Module):
        super().__init__()
        _, stock, last_mlp = STOCK[backbone]
        self.net = stock().train()
        layers = getattr(self.net, last_mlp).layers
        self.out_dim = layers[-1].in_features
        layers[-1] = nn.Identity()
        self.head = head

    def forward(self, g, state_attr=None):
        return self.head(self.net(g, state_attr=state_attr).reshape(-1, self.out_dim))


def matgl_epochs(backbone: str, structures: dict[str, list], targets: dict[str, list[float]], head: nn.Module,
                 batch_size: int, epochs: int) -> list[float]:
    """Epoch CPU times of matgl's training utilities (its dataset, loader, collate and Lightning module)."""
    import lightning as L
    from matgl.ext.pymatgen import Structure2Graph
    from matgl.graph.data import MGLDataLoader, MGLDataset
    from matgl.utils.training import ModelLightningModule

    net = MatglNet(backbone, head)
    converter = Structure2Graph(element_types=tuple(net.net.element_types), cutoff=net.net.cutoff)
    data = {split: MGLDataset(structures=structures[split], labels={"y": targets[split]}, converter=converter,
                              save_cache=False, root=tempfile.mkdtemp())  # nothing written, nothing unpickled
            for split in ("train", "val")}
    train, val = MGLDataLoader(train_data=data["train"], val_data=data["val"], batch_size=batch_size, num_workers=0)
    y = torch.tensor(targets["train"])
    module = ModelLightningModule(model=net, data_mean=float(y.mean()), data_std=float(y.std()),
                                  loss="l1_loss", lr=1e-3, decay_steps=1000, decay_alpha=0.01)
    clock = EpochClock()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock.callback])
    trainer.fit(module, train, val)
    return clock.epochs()


def training(backbone: str, batch_size: int, epochs: int, repeats: int) -> dict:
    """Median epoch CPU seconds of our AGL stage and of matgl's loop, interleaved `repeats` times."""
    from paraisite.data.datasets import source_path
    from paraisite.data.records import read_records

    cfg, module = build([f"backbone={backbone}"])
    dm = datamodule("agl", module.backbone.featurizer(), batch_size)
    by_id = {r.id: r for r in read_records(source_path("agl"))}
    split_records = {s: [by_id[dm.data.ids[i]] for i in dm.splits[s]] for s in ("train", "val")}
    structures = {s: [r.structure for r in recs] for s, recs in split_records.items()}
    targets = {s: [float(torch.log10(torch.tensor(r.target))) for r in recs] for s, recs in split_records.items()}
    state = {k: v.clone() for k, v in module.state_dict().items()}
    ours, theirs = [], []
    for _ in range(repeats):
        module.load_state_dict(state)
        durations, _ = our_stage(cfg, module, datamodule("agl", module.backbone.featurizer(), batch_size), epochs,
                                 Path(tempfile.mkdtemp()), clock=time.process_time)
        ours += durations
        head = type(module.head)(module.head.in_dim, module.head.widths, module.head.activation)
        head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
        theirs += matgl_epochs(backbone, structures, targets, head, batch_size, epochs)
    return {"ours_s": statistics.median(ours), "matgl_s": statistics.median(theirs), "n_train": len(dm.splits["train"])}


def prediction(backbone: str, n: int, repeats: int) -> dict:
    """Median CPU seconds to predict n MP structures (parsed): matgl's predict_structure loop vs ours, batched."""
    from pymatgen.core import Structure

    from bench.common import model_folder
    from paraisite.data.records import Record
    from paraisite.predict import load_ensemble, predict_records

    rows = screening_records(n)
    structures = [Structure.from_dict(r["structure"]) for r in rows]
    records = [Record(r["id"], s.composition.reduced_formula, None, s) for r, s in zip(rows, structures)]
    (member,) = load_ensemble([model_folder(Path(tempfile.mkdtemp()), [f"backbone={backbone}"])])
    stock = STOCK[backbone][1]()

    def matgl_loop():
        with torch.no_grad():
            for s in structures:
                stock.predict_structure(s)

    loop, ours = [], []
    for _ in range(repeats):
        for fn, times in ((matgl_loop, loop), (lambda: predict_records([member], records), ours)):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return {"ours_s": statistics.median(ours), "matgl_s": statistics.median(loop), "n": n}


def compare(backbone: str, args) -> tuple[dict, list[str]]:
    """One backbone's ratios (bench.json entry) and its two table rows."""
    pred = prediction(backbone, args.n, args.repeats)
    train = training(backbone, args.batch_size, args.epochs, args.repeats)
    r_train, r_pred = train["matgl_s"] / train["ours_s"], pred["matgl_s"] / pred["ours_s"]
    name = STOCK[backbone][0]
    result = {"train_vs_matgl_loop": round(r_train, 2), "predict_vs_matgl_loop": round(r_pred, 2),
              "train_s_per_epoch": {"ours": round(train["ours_s"], 3), "matgl": round(train["matgl_s"], 3)},
              "predict_s": {"ours": round(pred["ours_s"], 3), "matgl": round(pred["matgl_s"], 3)},
              "agl_train_structures": train["n_train"]}
    rows = [
        f"| {name}: training, s per AGL epoch (Eform backbone + MLP head, {train['n_train']} structures, batch "
        f"{args.batch_size}, validation included): matgl `ModelLightningModule` + `MGLDataLoader` vs our stage | "
        f"{train['matgl_s']:.2f} | {train['ours_s']:.2f} | **{r_train:.2f}×** |",
        f"| {name}: prediction, s for {args.n} MP structures (parsed): matgl `predict_structure` loop vs ours "
        f"batched (graphs + inference) | {pred['matgl_s']:.2f} | {pred['ours_s']:.2f} | **{r_pred:.2f}×** |",
    ]
    return result, rows


def main() -> None:
    from paraisite.task import quiet_third_party

    quiet_third_party()
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", nargs="+", choices=sorted(STOCK), default=["megnet", "m3gnet"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="AGL training batch (8: the published recipe)")
    parser.add_argument("--n", type=int, default=1000, help="MP structures predicted")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results, rows = {}, []
    for backbone in args.backbones:
        results[backbone], more = compare(backbone, args)
        rows += more
    first = results[args.backbones[0]]  # the headline ratios: MEGNet's (the issue's), the rest by backbone
    result = {"train_vs_matgl_loop": first["train_vs_matgl_loop"],
              "predict_vs_matgl_loop": first["predict_vs_matgl_loop"], "by_backbone": results,
              "settings": {"batch_size": args.batch_size, "epochs": args.epochs, "repeats": args.repeats,
                           "predict_structures": args.n, "threads": args.threads, "clock": "process CPU time"},
              "machine": machine(), "command": COMMAND}
    lines = [
        f"Machine: {machine()}. Command: `{COMMAND}`; both sides interleaved in one process, "
        f"{args.threads} torch thread(s), no loader worker processes, process CPU seconds, medians of "
        f"{args.repeats} repeats.",
        "",
        "| comparison | matgl | ours | ours faster by |",
        "|---|---|---|---|",
        *rows,
    ]
    write_section("peer", "\n".join(lines))
    (DOC.parent / "results").mkdir(exist_ok=True)
    (DOC.parent / "results" / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
