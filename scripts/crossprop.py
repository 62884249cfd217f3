"""Cross-property transfer at full scale: the blind-test prediction files and the 41-set table of `sweeps/crossprop.sh`.

    python scripts/crossprop.py outputs/crossprop [--blind ../shared/blind/crossprop]

Reads `<out>/blind/<set>/<mode>/*/` (trained on the whole train.csv: validation MAE, predictions of the held-back
formulas) and `<out>/carved/<set>/<mode>/*/` (a 20 % test slice carved from train.csv: test MAE). Selection happens on
validation only: the hidden layer of `tl_features`, the head of `tl_finetune` (the source's output layer, or a fresh
one: the `tl_reinit` runs), and the `selected` mode per set. Writes
`docs/results/crossprop/blind/<mode>/<set>.csv` (formula,prediction in the blind file's row order; an empty prediction
where the formula cannot be predicted), `docs/results/crossprop/table41.csv` and the `crossprop41` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import DOC, machine, write_section  # noqa: E402
from paraisite.data.datasets import CROSSPROP  # noqa: E402
from paraisite.report import match, pool, read_predictions  # noqa: E402
from paraisite.stats import paired, rng_for  # noqa: E402

MODES = ("scratch", "magpie", "tl_finetune", "tl_features")
TL_MODES = ("tl_finetune", "tl_features")
VARIANT_FOLDERS = {"tl_reinit": ("tl_finetune", "fresh head")}  # run folder → (mode, variant) chosen on validation
RESULTS = DOC.parent / "results" / "crossprop"
# Gupta et al. 2021, Table 4 (the sets whose numbers we have): test MAE of the best from-scratch / best TL model
PAPER = {"exfoliation_energy": (54.26, 51.56), "piezo_max_dij": (26.46, 23.46), "piezo_max_eij": (0.436, 0.367),
         "slme": (7.193, 6.420), "spillage": (0.410, 0.373), "mbj_bandgap": (0.555, 0.534),
         "bulkmoduluskv": (11.83, 11.28), "shearmodulusgv": (11.26, 11.01), "optb88vdw_bandgap": (0.279, 0.251),
         "deltae": (0.135, 0.125), "ehull": (0.058, 0.050), "expt_bandgap": (0.4458, 0.3551),
         "expt_deltae": (0.0964, 0.0708)}


@dataclass(frozen=True)
class Choice:
    """One set × mode of one part, its variant (tl_features: the feature layer; tl_finetune: the head) chosen on mean
    validation MAE over seeds."""

    folders: tuple[Path, ...]  # one run per seed
    variant: str | None
    val_mae: float  # mean over seeds
    test_mae: tuple[float, ...]  # per seed (carved part)
    seeds: tuple[int, ...]


def choices(out: Path, part: str) -> dict[tuple[str, str], Choice]:
    groups: dict[tuple[str, str, str | None], list[tuple[Path, dict]]] = defaultdict(list)
    for file in sorted((out / part).glob("*/*/*/results.json")):
        run = json.loads(file.read_text())
        data, folder = file.parts[-4], file.parts[-3]
        mode, variant = VARIANT_FOLDERS.get(folder, (folder, None))
        if run.get("status") != "ok" or mode not in MODES:
            continue
        if mode == "tl_features":
            variant = f"layer {run['stages'][-1]['features_layer']}"
        groups[data, mode, variant].append((file.parent, run))
    best: dict[tuple[str, str], Choice] = {}
    for (data, mode, variant), runs in groups.items():
        val = float(np.mean([r["stages"][-1]["best_val_mae"] for _, r in runs]))
        test = tuple(r["test"][data]["mae"] for _, r in runs if data in r["test"])
        if (data, mode) not in best or val < best[data, mode].val_mae:
            best[data, mode] = Choice(tuple(f for f, _ in runs), variant, val, test,
                                      tuple(r["config"]["seed"] for _, r in runs))
    return best


def source_models(out: Path) -> list[str]:
    """One line per source model the TL runs used (their results.json `source_model`: settings, test MAE)."""
    seen = {}
    for file in sorted(out.glob("*/*/tl_*/*/results.json")):
        info = json.loads(file.read_text()).get("source_model")
        if info:
            seen[info["folder"]] = info
    return [f"Source model `{s['table']}` ({folder}): test MAE **{s['test']['mae']:.4f}** eV/atom, RMSE "
            f"{s['test']['rmse']:.4f}, R² {s['test']['r2']:.3f} on {s['test']['n']} held-out formulas; best epoch "
            f"{s['best_epoch'] + 1} of {s['epochs_run']} run; {s['wall_time_s'] / 60:.0f} min; settings {s['settings']}."
            for folder, s in seen.items()]


def blind_predictions(choice: Choice, n_rows: int) -> list[str]:
    """Mean prediction over the seeds' runs per blind row (predictions.csv ids end in ':<line of the input>')."""
    sums, counts = np.zeros(n_rows), np.zeros(n_rows)
    for folder in choice.folders:
        with open(folder / "predictions.csv") as f:
            for row in csv.DictReader(f):
                i = int(row["id"].rsplit(":", 1)[1]) - 2
                if row["prediction"]:
                    sums[i] += float(row["prediction"])
                    counts[i] += 1
    return ["" if c < len(choice.folders) else repr(float(s / c)) for s, c in zip(sums, counts)]


def write_blind(blind_choices: dict[tuple[str, str], Choice], blind: Path) -> dict[str, str]:
    """The five modes' files per set; returns the selected mode per set (the best validation MAE of the modes run)."""
    selected = {}
    for data in CROSSPROP:
        formulas_file = blind / data / "formulas.csv"
        if not formulas_file.exists():
            continue
        with open(formulas_file) as f:
            formulas = [row["formula"] for row in csv.DictReader(f)]
        done = {m: blind_choices[data, m] for m in MODES if (data, m) in blind_choices}
        if done:  # among the modes run so far (the table marks a choice among fewer than all)
            selected[data] = min(done, key=lambda m: done[m].val_mae)
            done["selected"] = done[selected[data]]
        for mode, choice in done.items():
            path = RESULTS / "blind" / mode / f"{data}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["formula", "prediction"])
                writer.writerows(zip(formulas, blind_predictions(choice, len(formulas))))
    return selected


@cache
def test_repeats(choice: Choice, data: str) -> dict:
    """{seed: the carved test predictions of that seed's run on `data`}."""
    repeats = {}
    for folder in choice.folders:
        run = {"dir": str(folder), **json.loads((folder / "results.json").read_text())}
        seed = run["config"]["seed"]
        repeats[seed] = pool(seed, data, [(run, read_predictions(run)[data])])
    return repeats


def versus(a: Choice, b: Choice, names: tuple[str, str], data: str) -> dict:
    """Test MAE of A − B on the materials and seeds both predicted: the paired bootstrap interval over materials, the
    permutation p, and the per-seed differences (whose spread is the seed spread once there are several seeds)."""
    ra, rb = test_repeats(a, data), test_repeats(b, data)
    pairs = [match(ra[seed], rb[seed], names, data) for seed in sorted(ra.keys() & rb.keys())]
    return paired([x for x, _ in pairs], [y for _, y in pairs], "mae", "generic", rng_for("crossprop", data))


def median_mae(data: str, seed: int) -> float:
    """Test MAE of predicting the training median on the carved split of `seed`: the floor to beat."""
    from paraisite.data.composition import CompositionFeaturizer
    from paraisite.data.datamodule import LTCDataModule

    dm = LTCDataModule(f"crossprop/{data}", CompositionFeaturizer(), seed=seed, on_bad="skip")
    dm.setup()
    return float((dm.targets("test") - dm.targets("train").median()).abs().mean())


def identical_sets(data_dir: Path) -> list[list[str]]:
    """Groups of sets whose train.csv files are byte-identical (one experiment that the counts hold twice)."""
    by_hash = defaultdict(list)
    for data in CROSSPROP:
        by_hash[hashlib.sha256((data_dir / "crossprop" / data / "train.csv").read_bytes()).hexdigest()].append(data)
    return [group for group in by_hash.values() if len(group) > 1]


def fmt(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.3g}" if abs(x) < 100 else f"{x:.1f}"


def table(blind_choices: dict, carved: dict, selected: dict[str, str],
          data_dir: Path) -> tuple[str, list[list], list[list]]:
    head = ["set", "n", "train median", *(f"{m} val / test" for m in MODES), "selected", "paper SC / TL"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows, comparisons, counts = [], [], defaultdict(int)
    for data in CROSSPROP:
        if not any((data, m) in blind_choices or (data, m) in carved for m in MODES):
            continue
        n = sum(1 for _ in open(data_dir / "crossprop" / data / "train.csv")) - 1
        val = {m: blind_choices[data, m].val_mae if (data, m) in blind_choices else None for m in MODES}
        test = {m: float(np.mean(carved[data, m].test_mae)) if (data, m) in carved and carved[data, m].test_mae
                else None for m in MODES}
        carved_seeds = sorted({s for m in MODES if (data, m) in carved for s in carved[data, m].seeds})
        median = (float(np.mean([median_mae(data, s) for s in carved_seeds]))  # over the seeds' carved splits
                  if carved_seeds else None)
        cells = [f"{fmt(val[m])} / {fmt(test[m])}" + (f" ({blind_choices[data, m].variant})"
                 if (data, m) in blind_choices and blind_choices[data, m].variant else "") for m in MODES]
        paper = " / ".join(map(fmt, PAPER[data])) if data in PAPER else "—"
        complete = all(v is not None for v in val.values())
        choice = selected.get(data, "—") + ("" if complete else f" (of {sum(v is not None for v in val.values())} modes)")
        if complete:
            counts["selected_sets"] += 1
            counts[f"selected_{selected[data]}"] += 1
        lines.append(f"| {data} | {n} | {fmt(median)} | " + " | ".join(cells) + f" | {choice} | {paper} |")
        rows.append([data, n, median, *(val[m] for m in MODES), *(test[m] for m in MODES), selected.get(data, "")])
        tl = [m for m in TL_MODES if (data, m) in carved and test[m] is not None]
        if tl and test["scratch"] is not None and test["magpie"] is not None:
            best_tl = min(tl, key=lambda m: carved[data, m].val_mae)  # the TL mode chosen on validation
            counts["sets"] += 1
            for rival in ("scratch", "magpie"):
                diff = versus(carved[data, best_tl], carved[data, rival], (best_tl, rival), data)
                comparisons.append([data, best_tl, rival, diff["a"], diff["b"], diff["diff"], diff["lo"], diff["hi"],
                                    diff["p"], len(diff["per_repeat"]), float(np.std(diff["per_repeat"]))])
                counts[f"beats_{rival}"] += diff["diff"] < 0
                counts[f"clearly_beats_{rival}"] += diff["hi"] < 0  # the whole interval below 0
                counts[f"clearly_loses_{rival}"] += diff["lo"] > 0
                seeds = diff["per_repeat"]  # per-seed differences: their std is the seed spread
                counts[f"seed_sets_{rival}"] += len(seeds) > 1
                counts[f"beyond_spread_{rival}"] += len(seeds) > 1 and diff["diff"] < -np.std(seeds)
                counts[f"beyond_spread_loses_{rival}"] += len(seeds) > 1 and diff["diff"] > np.std(seeds)
    summary = (f"Sets with all four modes on the carved test: {counts['sets']}. TL (fine-tune or features, chosen on "
               f"validation) has the lower test MAE than ElemNet scratch on {counts['beats_scratch']} (the paired "
               f"95 % interval over materials below 0 on {counts['clearly_beats_scratch']}, above 0 on "
               f"{counts['clearly_loses_scratch']}) and than the Magpie baseline on {counts['beats_magpie']} (below 0 "
               f"on {counts['clearly_beats_magpie']}, above 0 on {counts['clearly_loses_magpie']}). "
               + (f"On the {counts['seed_sets_scratch']} sets with several seeds, TL is ahead by more than the seed "
                  f"spread (mean difference below minus the std of the per-seed differences) of scratch on "
                  f"{counts['beyond_spread_scratch']} (behind by more on {counts['beyond_spread_loses_scratch']}) and "
                  f"of Magpie on {counts['beyond_spread_magpie']} (behind by more on "
                  f"{counts['beyond_spread_loses_magpie']}). " if counts["seed_sets_scratch"] else
                  "One seed per mode: the seed spread is not measured (the interval covers the sampling of test "
                  "materials, not training noise). ")
               + f"Selected on validation (blind models, the {counts['selected_sets']} sets with all four modes): "
               + ", ".join(f"{m} {counts[f'selected_{m}']}" for m in MODES) + ".")
    twins = identical_sets(data_dir)
    if twins:
        summary += (" Identical training files (one experiment, counted once per name above): "
                    + "; ".join(" = ".join(group) for group in twins) + ".")
    return "\n".join([summary, "", *lines]), rows, comparisons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--blind", type=Path, default=Path(__file__).resolve().parents[2] / "shared/blind/crossprop")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    from paraisite.paths import data_dir

    blind_choices, carved = choices(args.out, "blind"), choices(args.out, "carved")
    selected = write_blind(blind_choices, args.blind)
    text, rows, comparisons = table(blind_choices, carved, selected, args.data_dir or data_dir())
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "table41.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "n", "train_median_mae", *(f"{m}_val_mae" for m in MODES),
                         *(f"{m}_test_mae" for m in MODES), "selected"])
        writer.writerows(rows)
    with open(RESULTS / "tl_versus.csv", "w", newline="") as f:  # the paired comparisons behind the counts
        writer = csv.writer(f)
        writer.writerow(["set", "tl_mode", "rival", "tl_test_mae", "rival_test_mae", "diff", "lo", "hi", "p", "seeds",
                         "seed_std"])
        writer.writerows(comparisons)
    body = (f"Machine: {machine()}. Command: `sweeps/crossprop.sh` (PART=blind, then PART=carved; budget in its header), "
            f"then `python scripts/crossprop.py {args.out}`. val: validation MAE of the model trained on the whole "
            "train.csv (the one that predicts the blind formulas); test: MAE on a 20 % slice carved from train.csv "
            "(each seed carves its own slice and trains a separate model on the rest; the mean over the seeds run); `—`: "
            "not run yet.\n\n" + text
            + "".join(f"\n\n{line}" for line in source_models(args.out)))
    write_section("crossprop41", body)
    print(body)


if __name__ == "__main__":
    main()
