"""How far a bundle stored in a smaller precision predicts from the same members stored in a larger one.

    python bench/bundle_precision.py REFERENCE CANDIDATE [--inputs FILE...] [--bte TABLE...]
REFERENCE and CANDIDATE are bundle folders (or shipped names) holding members of the same names (e.g. written by
`paraisite bundle … --precision float32` and `--precision int8`). Both predict the inputs (default: Dataset1 and
Dataset2 of the data folder, with the BTE tables of docs/results/bte/ so that the BTE routes predict too); printed:
each file's size and, per route, the relative difference of the members' predictions and of the route's mean (median
and largest over structures).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, machine  # noqa: E402

TABLES = ["dataset1_sevennet.csv", "dataset2_sevennet.csv", "unstable_renormalised_sevennet.csv",  # SevenNet-0's
          "dataset1_sevennet_mf_r2scan.csv", "unstable_renormalised_sevennet_mf_r2scan.csv"]  # the r2SCAN head's


def predicted(bundle: str, inputs: list[str], tables: list[str], out: Path) -> dict[str, dict]:
    from paraisite.cli import main as cli

    if cli(["predict", *inputs, "--model", bundle, *(["--bte", *tables] if tables else []), "--output", str(out),
            "--quiet"]) != 0:
        raise SystemExit(f"{bundle}: predict failed")
    with open(out, newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def main() -> None:
    from paraisite.data.datasets import source_path
    from paraisite.models.bundle import WEIGHTS, bundle_folder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference")
    parser.add_argument("candidate")
    parser.add_argument("--inputs", nargs="+", default=None)
    parser.add_argument("--bte", nargs="+", default=[str(ROOT / "docs/results/bte" / t) for t in TABLES])
    args = parser.parse_args()
    inputs = args.inputs or [str(source_path("dataset1")), str(source_path("dataset2"))]
    ref, new = {}, {}  # (route, id): row; each input predicted without the BTE tables (the plain routes) and with them
    with tempfile.TemporaryDirectory() as tmp:
        for tables in ([], args.bte):
            for rows, bundle in ((ref, args.reference), (new, args.candidate)):
                found = predicted(bundle, inputs, tables, Path(tmp) / "p.csv")
                rows.update({(row["route"], i): row for i, row in found.items()})
    print(machine())
    for name in (args.reference, args.candidate):
        print(f"{name}: {WEIGHTS} {(bundle_folder(name) / WEIGHTS).stat().st_size / 1e6:.1f} MB")
    columns = {c for row in ref.values() for c in row if c.startswith("kappa_m") and c != "kappa_mean"}
    print("| route | structures | members: median / largest relative difference | route mean: median / largest |")
    print("|---|---|---|---|")
    for route in sorted({r for r, _ in ref}):
        ids = [key for key, row in ref.items() if key[0] == route and row["kappa_mean"]]
        members = np.array([abs(float(new[i][c]) / float(ref[i][c]) - 1) for i in ids for c in columns
                            if ref[i].get(c) and float(ref[i][c]) > 0])  # a member floored at 0: no ratio
        means = np.array([abs(float(new[i]["kappa_mean"]) / float(ref[i]["kappa_mean"]) - 1) for i in ids])
        print(f"| {route} | {len(ids)} | {np.median(members):.1e} / {members.max():.1e} | "
              f"{np.median(means):.1e} / {means.max():.1e} |")


if __name__ == "__main__":
    main()
