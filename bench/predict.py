"""Prediction speed and memory: matgl's per-structure loop (upstream's way) vs `paraisite predict`, in one run.

    python bench/predict.py [--n 1000] [--rss-sizes 1000 10000]
Writes the `predict` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    machine, model_folder, peak_rss_mb, screening_records, stock_megnet, write_jsonl, write_section)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    from paraisite.task import quiet_third_party

    quiet_third_party()
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=1, help="graph-building processes for the (b'') row")
    args = parser.parse_args()

    from pymatgen.core import Structure

    from paraisite.data.records import Record
    from paraisite.predict import load_ensemble, predict, predict_records

    tmp = Path(tempfile.mkdtemp())
    rows = screening_records(args.n)
    structures = [Structure.from_dict(r["structure"]) for r in rows]
    run_dir = model_folder(tmp / "run")
    (member,) = load_ensemble([run_dir], device=args.device)

    # (a) upstream's way, on the CPU: matgl's per-structure predict_structure on its own published MEGNet-Eform
    megnet = stock_megnet()

    def matgl_loop():
        with torch.no_grad():
            return [megnet.predict_structure(s) for s in structures]

    t_loop, _ = timed(matgl_loop)

    # (a') the same per-structure loop through our model (graph + forward one at a time)
    records = [Record(r["id"], s.composition.reduced_formula, None, s) for r, s in zip(rows, structures)]

    def our_loop():
        return [predict_records([member], [rec], 1) for rec in records]

    t_our_loop, _ = timed(our_loop)
    # graph building alone
    t_graphs, _ = timed(member.featurizer.build, records)
    # (b) ours, batched, from parsed structures
    t_batched, _ = timed(predict_records, [member], records, 128)
    # (b') the whole CLI path from a file: parse + graphs + inference + writing
    inputs = write_jsonl(rows, tmp / "in.jsonl.gz")
    t_file, counts = timed(predict, [inputs], [member], tmp / "out.csv")
    t_workers, _ = timed(predict, [inputs], [member], tmp / "out_workers.csv", 128, 128, 0, float("inf"),
                         args.workers)

    rss = {}
    for size in args.rss_sizes:
        path = write_jsonl(screening_records(size), tmp / f"rss{size}.jsonl.gz")
        rss[size] = peak_rss_mb([sys.executable, "-m", "paraisite.cli", "predict", str(path), "--run",
                                 str(run_dir), "--output", str(tmp / f"rss{size}.csv"), "--device", args.device])

    n = args.n
    lines = [
        f"Machine: {machine()}; device `{args.device}`; {n} Materials Project structures from "
        f"`screening/mp_scan.json.gz`; one MEGNet-Eform model (+ MLP head for ours). Command: `make bench-predict`.",
        "",
        "| path | structures/s | × matgl loop |",
        "|---|---|---|",
        f"| (a) matgl `predict_structure`, one structure at a time, CPU (upstream) | {n / t_loop:.0f} | 1.00 |",
        f"| (a') our model, one structure at a time | {n / t_our_loop:.0f} | {t_loop / t_our_loop:.2f} |",
        f"| (b) ours, batched (graphs + inference, parsed structures) | {n / t_batched:.0f} | {t_loop / t_batched:.2f} |",
        f"| (b') `paraisite predict` from a file (parse + graphs + inference + CSV) | {n / t_file:.0f} | "
        f"{t_loop / t_file:.2f} |",
        f"| (b'') the same with {args.workers} graph-building worker process(es), chunks of 128 | {n / t_workers:.0f} | "
        f"{t_loop / t_workers:.2f} |",
        f"| graph building alone | {n / t_graphs:.0f} | — |",
        "",
        "| structures | peak RSS of `paraisite predict` (MB) | ratio to the smallest |",
        "|---|---|---|",
        *(f"| {size} | {mb:.0f} | {mb / rss[min(rss)]:.2f} |" for size, mb in rss.items()),
    ]
    assert counts["predicted"] > 0
    write_section("predict", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
