"""The history of an `objective=cv` search (`hparams_search=dft_optuna`) as a table: per trial its parameters, the
objective (mean best validation MAPE over the folds: what the search saw) and the pooled out-of-fold test MAPE of
the same fold runs (what it never saw), best objective first; then the trial the search picks, paired with a
baseline row on the same materials.

    python scripts/search_history.py outputs/hparams_search/m3gnet_dft_dataset2 \
        --baseline outputs/backbones_cv/m3gnet/dft --row "m3gnet/eform/dft/dataset2 [cv]" \
        --output docs/results/search_m3gnet_dft_dataset2
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from omegaconf import OmegaConf  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from paraisite.report import compare_rows, find_runs, label, summarize  # noqa: E402


def trial_params(trial: Path) -> dict[str, str]:
    """The searched keys of a trial: its Hydra overrides that the sweeper set (`++…` stage keys, `head.…`)."""
    overrides = OmegaConf.load(trial / ".hydra" / "overrides.yaml")
    pairs = (str(o).split("=", 1) for o in overrides)
    return {k.removeprefix("++finetune.stages."): v for k, v in pairs if k.startswith(("++", "head."))}


def short(value) -> str:
    """A searched value as the table shows it (floats to 3 significant digits)."""
    try:
        return f"{float(value):.3g}" if "." in str(value) or "e" in str(value) else str(value)
    except ValueError:
        return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="the search's sweep folders (its trials below them)")
    parser.add_argument("--baseline", type=Path, nargs="+", required=True, help="folder(s) of the baseline row's runs")
    parser.add_argument("--row", required=True, help="the baseline row's label (as in `paraisite report`, before any "
                                                     "variant) among the rows of --baseline")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    trials = sorted({fold.parent for sweep in args.sweeps for fold in sweep.glob("*/fold0")})
    rows = summarize(find_runs([*trials, *args.baseline]))
    (baseline,) = [r for r in rows if label(r).startswith(args.row) and any(
        folder in Path(m["dir"]).parents for folder in args.baseline for m in r["_members"])]
    data = baseline["data"]
    history = []
    for trial in trials:
        (row,) = [r for r in rows if any(Path(m["dir"]).parent == trial for m in r["_members"])]
        history.append({"trial": f"{trial.parent.name}/{trial.name.split('-')[0]}", "complete": not row["incomplete"],
                        "objective": row["val_mean"], "test": row[f"{data}_mean"], "lo": row[f"{data}_lo"],
                        "hi": row[f"{data}_hi"], "_row": row, **trial_params(trial)})
    history.sort(key=lambda h: (not h["complete"], h["objective"]))
    args.output.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for h in history for k in h if k != "_row"))
    with open(args.output / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    params = [k for k in keys if k not in {"trial", "complete", "objective", "test", "lo", "hi"}]
    lines = [f"# Search history: {len(history)} trials, best objective first", "",
             f"objective: mean best validation MAPE over the folds (searched); test: pooled out-of-fold MAPE on {data} "
             "of the same fold runs [95 % bootstrap interval] (never seen by the search).", "",
             "| trial | objective | test | " + " | ".join(params) + " |", "|---" * (3 + len(params)) + "|"]
    for h in history:
        test = f"{h['test']:.3f} [{h['lo']:.3f}, {h['hi']:.3f}]" if h["complete"] else "incomplete"
        lines.append(f"| {h['trial']} | {h['objective']:.3f} | {test} | " + " | ".join(short(h.get(p, "")) for p in params)
                     + " |")
    best = next((h for h in history if h["complete"]), None)
    if best is not None:
        (paired,) = [c for c in compare_rows(best["_row"], baseline, "mape") if c["test_set"] == data]
        lines += ["", f"**Picked by the objective**: trial {best['trial']} (objective {best['objective']:.3f}); baseline "
                      f"`{args.row}` (objective {baseline['val_mean']:.3f}). Paired on the same {paired['n_materials']} "
                      f"materials (seed {paired['seeds']}): picked − baseline {paired['diff']:+.3f} "
                      f"[{paired['ci_lo']:+.3f}, {paired['ci_hi']:+.3f}], p {paired['p']:.4f}."]
    complete = [h for h in history if h["complete"]]
    if len(complete) >= 3:  # does the objective rank the trials as their test error does?
        rho = spearmanr([h["objective"] for h in complete], [h["test"] for h in complete]).statistic
        top = sorted(complete, key=lambda h: h["objective"])[: max(3, len(complete) // 2)]
        rho_top = spearmanr([h["objective"] for h in top], [h["test"] for h in top]).statistic
        lines += ["", f"Objective vs test over the {len(complete)} complete trials: Spearman ρ {rho:+.2f}; over the "
                      f"best {len(top)} by objective {rho_top:+.2f}."]
    (args.output / "history.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
