"""`paraisite` console script: data checks and reports (train with `python train.py`)."""

from __future__ import annotations

import argparse
import sys

from paraisite.errors import ParaisiteError


def data_check(args) -> int:
    from paraisite.data.mirror import check
    from paraisite.paths import data_dir

    report = check(args.data_dir)
    print(f"data folder {data_dir(args.data_dir)}: {len(report['ok'])} ok, {len(report['missing'])} missing, "
          f"{len(report['corrupt'])} corrupt")
    for kind in ("missing", "corrupt"):
        for rel in report[kind]:
            print(f"  {kind}: {rel}")
    return 1 if report["missing"] or report["corrupt"] else 0


def report(args) -> int:
    from paraisite.report import markdown, write_report

    rows = write_report(args.runs, args.output, args.metric)
    print(markdown(rows, args.metric))
    print(f"wrote {args.output}/table.csv, table.md, heatmap.png, curves.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paraisite", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="the data folder").add_subparsers(dest="action", required=True)
    check = data.add_parser("check", help="verify every file against SHA256SUMS")
    check.add_argument("--data-dir", default=None)
    check.set_defaults(func=data_check)
    rep = commands.add_parser("report", help="gather runs' results.json into the paper's table and plots")
    rep.add_argument("runs", nargs="+", help="run or sweep folders (searched recursively)")
    rep.add_argument("--output", required=True, help="folder for table.csv, table.md, heatmap.png, curves.png")
    rep.add_argument("--metric", default="mape", choices=["mape", "mae", "log_mae", "log_rmse", "r2", "spearman"])
    rep.set_defaults(func=report)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ParaisiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
