"""κ by structure (MEGNet) beside κ by composition (ElemNet): test MAPE on each set's own test split (same splits:
same records, same seeds), from two `paraisite report` tables.

    python scripts/ltc_composition.py docs/results/holdout/table.csv docs/results/ltc_composition/table.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import write_section  # noqa: E402

CHAINS = [("scratch", "dft"), ("eform", "dft"), ("gap", "dft"), ("scratch", "agl_dft"), ("eform", "agl_dft"),
          ("gap", "agl_dft"), ("scratch", "agl"), ("eform", "agl"), ("gap", "agl")]
TESTS = ("dataset1", "dataset2", "mix")


def read(path: str) -> dict[tuple, dict]:
    with open(path) as f:
        return {(r["backbone"], r["pretrain"], r["finetune"], r["data"]): r for r in csv.DictReader(f)
                if r["protocol"] == "holdout"}


def cell(row: dict | None, test: str) -> str:
    if row is None or not row.get(f"{test}_n") or row[f"{test}_n"] == "0":
        return "—"
    mean, std = float(row[f"{test}_mean"]), row[f"{test}_std"]
    return f"{mean:.2f} ({float(std):.2f})" if std not in ("", "nan") else f"{mean:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tables", nargs="+", help="report table.csv files (any backbones)")
    args = parser.parse_args()
    rows = {}
    for path in args.tables:
        rows.update(read(path))
    backbones = sorted({k[0] for k in rows}, key=lambda b: b != "megnet")
    head = ["pretrain → chain", "trained on", *(f"{t}: {b}" for t in TESTS for b in backbones)]
    lines = [f"Test MAPE, mean (std) over seeds. Command: `python scripts/ltc_composition.py {' '.join(args.tables)}`.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pretrain, finetune in CHAINS:
        for data in (("agl",) if finetune == "agl" else TESTS):
            cells = [cell(rows.get((b, pretrain, finetune, data)), t) for t in TESTS for b in backbones]
            if any(c != "—" for c in cells):
                lines.append(f"| {pretrain} → {finetune} | {data} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    write_section("ltc-composition", text)
    print(text)


if __name__ == "__main__":
    main()
