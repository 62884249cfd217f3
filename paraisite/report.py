"""Gather many runs' `results.json` into the paper's table (mean (std) over seeds), a heatmap and learning curves.

Rows of protocol `cv` are scored on pooled out-of-fold predictions: per repeat (seed), the `test_predictions.csv`
rows of its k fold runs are concatenated per test set (each record once) and the metric is computed on all of them
(`regression_metrics`), then averaged over repeats, with a 95 % bootstrap interval over materials (`stats`). A
repeat that lacks folds (a fold run failed or is missing) is shown as incomplete and left out. A cv row's
ensemble is scored out of fold too: per material, the mean of its out-of-fold predictions over the complete repeats
(`stats.ensemble`), with its interval. `--compare A B` gives paired differences A − B on the same (seed, test set,
id) predictions (`compare`); `--committee A B …` scores the ensemble of several rows (other backbones, chains) the
same way, next to each member row's own ensemble (`committee`). Each row also shows `val`: its runs' mean best
validation score of the final stage — what a choice between rows may honestly look at (the test columns may not).

A row pools the seeds of one configuration: runs are grouped on their whole resolved config (`.hydra/config.yaml`)
minus the seed and the runtime keys. Rows with the same backbone/pretrain/finetune/data/protocol but other settings
(lr, policy, epochs, split fractions, regressor, ...) stay apart, each labelled with what differs (`variant`; every
differing key in `row_configs.md`). Two finished runs of one configuration with the same seed are refused.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from paraisite.data.datasets import LTC_DATASETS
from paraisite.errors import ParaisiteError
from paraisite.paths import run_folders
from paraisite.recipe import backbone_class, flatten, run_identity, run_label
from paraisite.runlock import is_running
from paraisite.settings import DATA_KEYS
from paraisite.stats import (
    HIGHER_IS_BETTER,
    N_BOOTSTRAP,
    N_PERMUTATIONS,
    Repeat,
    bootstrap,
    ensemble,
    paired,
    rng_for,
)
from paraisite.target import Target, selection_score

log = logging.getLogger(__name__)

ROW_KEYS = ("backbone", "pretrain", "finetune", "data", "protocol")
TEST_SETS = ("dataset1", "dataset2", "mix", "agl")
NOT_SETTINGS = {"seed", "fold", "hydra"}  # with the runtime keys (recipe.run_identity drops them): what may differ
# between the runs of one row
SHORT_VARIANT = 3  # differing keys shown in the table's variant column (all of them in row_configs.md)


def find_runs(paths: list[str | Path]) -> list[dict]:
    """Every run under `paths`: its results.json, or for a run folder without one a `running` entry (a live process
    holds its lock) or a `missing` one (crashed, or not started)."""
    runs, seen = [], set()
    for root in map(Path, paths):
        if not root.exists():
            raise ParaisiteError(f"{root}: no such run or sweep folder")
        for folder in sorted(run_folders(root)):
            if folder.resolve() in seen:  # overlapping arguments (a sweep and one of its runs): count it once
                continue
            seen.add(folder.resolve())
            file = folder / "results.json"
            try:
                result = json.loads(file.read_text())
            except (OSError, ValueError) as exc:
                result = {"status": "running" if is_running(folder) else "missing",
                          "error": f"{file}: {exc.__class__.__name__}", "config": _config_from_hydra(folder)}
            result["dir"] = str(folder)
            runs.append(result)
    if not runs:
        raise ParaisiteError(f"no runs (results.json or .hydra/) under {', '.join(map(str, paths))}")
    return runs


def _config_from_hydra(folder: Path) -> dict:
    """The grid point of a run that left no results.json, labelled as a finished run would be."""
    from omegaconf import OmegaConf

    try:
        return run_label(OmegaConf.load(folder / ".hydra" / "config.yaml"))
    except Exception:  # an unreadable config: the run still shows up, under "?"
        return {}


def settings_of(run: dict) -> dict | None:
    """The run's settings (`config_settings`) from the config its `run_key.json` recorded at the first launch, else
    (runs of older versions) its `.hydra/config.yaml`; None when its folder has neither. Cached in the run dict."""
    if "settings" not in run:
        tree = recorded_config(Path(run["dir"])) if run.get("dir") else None
        run["settings"] = None if tree is None else config_settings(tree)
    return run["settings"]


def config_settings(tree: dict) -> dict:
    """A resolved config, flattened (`stage_overrides.lr`), without seed and runtime keys and without the
    `stage_by_data` recipes of datasets its chain does not train on."""
    ignored = NOT_SETTINGS | ({"source_training"} if not trains_source(tree) else set())
    stages = (tree.get("finetune") or {}).get("stages") or {}
    trained_on = {s.get(key) for s in stages.values() if isinstance(s, dict) for key in DATA_KEYS}
    settings = {k: v for k, v in flatten(run_identity(tree)).items() if k.split(".")[0] not in ignored
                and not (k.startswith("stage_by_data.") and k.split(".")[1] not in trained_on)}
    if tree.get("protocol") == "cv":  # runs from before the key validated on the `leading` slice
        settings.setdefault("datamodule.cv_val_slice", "leading")
    else:  # the key does not change what other protocols compute
        settings.pop("datamodule.cv_val_slice", None)
    return settings


EVALUATION_KEYS = ("protocol", "datamodule.cv_val_slice", "evaluate_on")  # how a model is scored, not what it is


def recipe_of(settings: dict) -> dict:
    """Settings without how the model is scored: what a protocol=final model shares with its cv row."""
    return {k: v for k, v in settings.items() if k not in EVALUATION_KEYS}


def cv_row_of(rows: list[dict], config: dict) -> dict:
    """The cv row (pooled out-of-fold predictions) of the recipe a model was trained with (`config`: its stored
    config, `recorded_config`, e.g. a protocol=final run's): the one whose settings equal the model's but for how it
    is scored."""
    from omegaconf import OmegaConf

    recipe = recipe_of(config_settings(config))
    same = [row for row in rows if is_pooled(row) and row["_members"] and
            recipe_of(settings_of(row["_members"][0]) or {}) == recipe]
    if len(same) != 1:
        point = run_label(OmegaConf.create(config))
        name = "/".join(str(point[k]) for k in ROW_KEYS[:4])
        near = [label(row) for row in rows if is_pooled(row) and all(row[k] == point[k] for k in ROW_KEYS[:4])]
        raise ParaisiteError(f"{len(same) or 'no'} cv row(s) of the recipe {name} in the folders given"
                             + (f" (rows of that grid point with other settings: {'; '.join(near)})" if near else ""))
    return same[0]


def trains_source(tree: dict) -> bool:
    """Whether the run's backbone trains its own source model (`Backbone.trains_source`): only then do the
    `source_training` settings change what it computes (True when the backbone class cannot be told)."""
    from omegaconf import OmegaConf

    try:
        return backbone_class(OmegaConf.create(tree["backbone"])).trains_source
    except Exception:  # no backbone node, an unknown class: keep every setting
        return True


def recorded_config(folder: Path) -> dict | None:
    """The config a run folder records: `run_key.json`'s (resolved at the first launch), else `.hydra/config.yaml`
    resolved (as written where an interpolation cannot be resolved here); None when it has neither."""
    from omegaconf import OmegaConf

    try:
        claimed = json.loads((folder / "run_key.json").read_text())
    except (OSError, ValueError):
        claimed = {}
    if isinstance(claimed.get("config"), dict):
        return claimed["config"]
    file = folder / ".hydra" / "config.yaml"
    if not file.is_file():
        return None
    cfg = OmegaConf.load(file)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot be resolved here: compare it as written
        return OmegaConf.to_container(cfg, resolve=False)


def row_key(run: dict) -> tuple[str, ...]:
    """The grid label (ROW_KEYS) and the run's whole configuration (as canonical JSON; '' when unknown)."""
    settings = settings_of(run)
    return (*(str(run.get("config", {}).get(k, "?")) for k in ROW_KEYS),
            "" if settings is None else json.dumps(settings, sort_keys=True, default=str))


def group(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Runs by row (`row_key`): a row pools the seeds (and, for cv, the folds) of one configuration."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[row_key(run)].append(run)
    return groups


def rows_of(runs: list[dict]) -> list[dict]:
    """One row per configuration, in order: its grid label (ROW_KEYS), `variant` (what sets it apart from rows of
    the same label), `_key` (`row_key`) and `_members` (its runs)."""
    groups = group(runs)
    diffs = variants(list(groups))
    return [dict(zip(ROW_KEYS, key), variant=short_variant(diffs[key]), _key=key, _members=groups[key])
            for key in sorted(groups)]


def variants(keys: list[tuple]) -> dict[tuple, dict[str, str]]:
    """{row key: {setting: value}} of the settings that differ between rows of the same grid label ({} for a label
    with one configuration)."""
    by_label: dict[tuple, list[tuple]] = defaultdict(list)
    for key in keys:
        by_label[key[:-1]].append(key)
    out = {}
    for group in by_label.values():
        configs = {key: json.loads(key[-1]) if key[-1] else None for key in group}
        names = sorted(set().union(*(c or {} for c in configs.values())))
        differing = [n for n in names
                     if len({json.dumps((c or {}).get(n, "—"), default=str) for c in configs.values()}) > 1]
        for key, config in configs.items():
            if len(group) == 1:
                out[key] = {}
            elif config is None:
                out[key] = {"config": "unknown (no .hydra/config.yaml)"}
            else:
                out[key] = {n: _value(config.get(n, "—")) for n in differing}
    return out


def _value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def short_variant(diff: dict[str, str]) -> str:
    shown = [f"{k}={v}" for k, v in list(diff.items())[:SHORT_VARIANT]]
    return ", ".join(shown) + (f", +{len(diff) - SHORT_VARIANT} more" if len(diff) > SHORT_VARIANT else "")


def check_seeds(members: list[dict]) -> None:
    """A row averages distinct seeds (and, for protocol cv, distinct folds of each seed): two finished runs of one
    configuration with one seed (and fold) are refused."""
    first: dict = {}
    for run in members:
        if run.get("status") == "ok":
            seed, fold = run["config"].get("seed"), run["config"].get("fold")
            if (seed, fold) in first:
                which = f"seed {seed}" + ("" if fold is None else f" and fold {fold}")
                raise ParaisiteError(f"{first[seed, fold]} and {run.get('dir', '?')}: two finished runs of the same "
                                     f"configuration with {which}; a row averages distinct seeds — report one "
                                     "of them (move the other out of the folders given)")
            first[seed, fold] = run.get("dir", "?")


def read_predictions(run: dict) -> dict[str, dict[str, np.ndarray]] | None:
    """{test set: {ids, true, pred}} from the run's test_predictions.csv; None when it has none. Cached in the run."""
    if "_predictions" not in run:
        file = Path(run["dir"]) / "test_predictions.csv" if run.get("dir") else None
        run["_predictions"] = None
        if file is not None and file.is_file():
            columns: dict[str, dict[str, list]] = defaultdict(lambda: {"ids": [], "true": [], "pred": []})
            try:
                with open(file, newline="") as f:
                    for record in csv.DictReader(f):
                        column = columns[record["test_set"]]
                        column["ids"].append(record["id"])
                        column["true"].append(float(record["target"]))
                        column["pred"].append(float(record["prediction"]))
            except (KeyError, ValueError) as exc:
                raise ParaisiteError(f"{file}: unreadable test predictions ({exc.__class__.__name__}: {exc})") from None
            run["_predictions"] = {test: {"ids": np.array(c["ids"], dtype=str), "true": np.array(c["true"]),
                                          "pred": np.array(c["pred"])} for test, c in columns.items()}
    return run["_predictions"]


def pool(seed, test: str, parts: list[tuple[dict, dict]]) -> Repeat:
    """One repeat on one test set: the predictions of `parts` ((run, its predictions of `test`)) concatenated; an id
    predicted twice is refused, naming the runs that hold it."""
    ids = np.concatenate([p["ids"] for _, p in parts])
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        twice = unique[counts > 1]
        holders = [run.get("dir", "?") for run, p in parts if np.isin(p["ids"], twice[:1]).any()]
        raise ParaisiteError(f"seed {seed}, test set {test}: {len(twice)} id(s) predicted more than once "
                             f"({', '.join(twice[:3])}{', …' if len(twice) > 3 else ''}; {twice[0]} in "
                             f"{' and '.join(holders) if len(holders) > 1 else holders[0] + ' (twice)'}); each record "
                             "is a test prediction once per seed — are runs of another split or data set in the "
                             "folders given?")
    return Repeat(seed, ids, np.concatenate([p["true"] for _, p in parts]),
                  np.concatenate([p["pred"] for _, p in parts]))


def expected_folds(members: list[dict]) -> int:
    """k of a cv row: its config's `datamodule.folds` (else the largest fold seen + 1)."""
    for run in members:
        folds = (settings_of(run) or {}).get("datamodule.folds")
        if folds is not None:
            return int(folds)
    return 1 + max((int(r["config"]["fold"]) for r in members if r.get("config", {}).get("fold") is not None),
                   default=0)


def runs_by_fold(members: list[dict], status: str = "ok") -> dict:
    """{seed: {fold: run}} of a cv row's runs with `status`; every seed of the row is a key, even one without such a
    run (a seed whose every fold failed is still an incomplete repeat)."""
    out: dict = defaultdict(dict)
    for run in members:
        config = run.get("config", {})
        if config.get("seed") is not None:
            out[config["seed"]]  # the seed is a key even without such a run
            if run.get("status") == status and config.get("fold") is not None:
                out[config["seed"]][int(config["fold"])] = run
    return out


def cv_repeats(members: list[dict]) -> tuple[dict, dict, int]:
    """({seed: {test set: pooled Repeat}} of complete repeats, {seed: why incomplete}, k) of a cv row."""
    k = expected_folds(members)
    runs, running = runs_by_fold(members), runs_by_fold(members, "running")
    complete, incomplete = {}, {}
    for seed in sorted(runs, key=seed_order):
        folds = runs[seed]
        missing = [f for f in range(k) if f not in folds and f not in running[seed]]
        no_file = [f for f in sorted(folds) if read_predictions(folds[f]) is None]
        if missing or no_file or running[seed]:
            why = [f"fold {', '.join(map(str, sorted(running[seed])))} running"] if running[seed] else []
            why += [f"fold {', '.join(map(str, missing))} failed or missing"] if missing else []
            why += [f"fold {', '.join(map(str, no_file))} without test_predictions.csv"] if no_file else []
            done = k - len(missing) - len(no_file) - len(running[seed])
            incomplete[seed] = f"{done} of {k} folds ({'; '.join(why)})"
            continue
        tests = dict.fromkeys(t for f in range(k) for t in read_predictions(folds[f]))
        complete[seed] = {test: pool(seed, test, [(folds[f], read_predictions(folds[f])[test]) for f in range(k)
                                                  if test in read_predictions(folds[f])]) for test in tests}
    return complete, incomplete, k


def seed_order(seed) -> tuple:
    """Sort key of seeds: numbers in numeric order."""
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def kind_of(members: list[dict]) -> str:
    ok = [r for r in members if r.get("status") == "ok"]
    return Target.of_results(ok[0]).kind if ok else "kappa"


def summarize(runs: list[dict], metric: str = "mape", n_boot: int = N_BOOTSTRAP) -> list[dict]:
    """One row per configuration (the grid label ROW_KEYS + every other setting but the seed): per test set,
    `{test}_mean`, `_std` (over seeds or repeats), `_n` (seeds or complete repeats), `_lo`/`_hi` (95 % bootstrap
    interval over materials; cv rows); `variant` says what sets the row apart from rows of the same label.

    protocol cv (runs read from folders): the metric of each complete repeat's pooled out-of-fold predictions,
    `folds` = k and `incomplete` = the repeats left out and why. Other protocols (and results passed in memory,
    without a run folder): the runs' own test metrics, mean (std) over seeds. `_members` (not written) holds the
    row's runs.

    cv rows also score the ensemble of their complete repeats on the same materials (`stats.ensemble`: per
    material, the mean of its out-of-fold predictions over the seeds — models that never saw it): `{test}_ensemble`
    with `_ensemble_lo`/`_ensemble_hi`, its 95 % bootstrap interval."""
    test_sets = list(TEST_SETS) + sorted({t for r in runs for t in r.get("test", {})} - set(TEST_SETS))
    rows = rows_of(runs)
    for row in rows:
        members = row["_members"]
        check_seeds(members)
        ok = [r for r in members if r.get("status") == "ok"]
        running = sum(r.get("status") == "running" for r in members)
        row.update(n_runs=len(members), n_failed=len(members) - len(ok) - running, n_running=running,
                   seeds=sorted({r["config"].get("seed") for r in ok}, key=seed_order), folds="", incomplete="",
                   val_mean=validation_mean(ok))
        if row["protocol"] == "cv" and all(r.get("dir") for r in members):
            complete, incomplete, row["folds"] = cv_repeats(members)
            row["_repeats"], row["incomplete"] = complete, "; ".join(f"seed {s}: {w}" for s, w in incomplete.items())
            row["_n_incomplete"] = len(incomplete)
            row["_tests"] = {t for r in members for t in r.get("test", {})}
            score_pooled(row, test_sets, metric, n_boot)
            continue
        for test in test_sets:
            values = np.array([r["test"][test][metric] for r in ok if metric in r.get("test", {}).get(test, {})], dtype=float)
            row[f"{test}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{test}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            row[f"{test}_n"] = len(values)
            row[f"{test}_lo"] = row[f"{test}_hi"] = float("nan")
    return rows


def score_pooled(row: dict, test_sets: list[str], metric: str, n_boot: int) -> None:
    """Per test set, a cv row's metric over its complete repeats (`_repeats`) with its interval, and its ensemble's."""
    kind = kind_of(row["_members"])
    for test in test_sets:
        repeats = [c[test] for c in row["_repeats"].values() if test in c]
        result = bootstrap(repeats, metric, kind, rng_for(*row["_key"], test, metric), n_boot)
        values = np.array(result["per_repeat"], dtype=float)
        row[f"{test}_mean"] = result["estimate"]
        row[f"{test}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        row[f"{test}_n"] = len(values) if np.isfinite(result["estimate"]) else 0
        row[f"{test}_lo"], row[f"{test}_hi"] = result["lo"], result["hi"]
        joint = bootstrap([ensemble(repeats)] if repeats else [], metric, kind,
                          rng_for(*row["_key"], test, metric, "ensemble"), n_boot)
        row[f"{test}_ensemble"] = joint["estimate"]
        row[f"{test}_ensemble_lo"], row[f"{test}_ensemble_hi"] = joint["lo"], joint["hi"]


def validation_mean(runs: list[dict]) -> float:
    """Mean over `runs` of the final stage's best validation score (`target.selection_score`); runs whose results
    hold no stage record (fakes, foreign files) are skipped; NaN when none has one."""
    key = f"best_val_{Target.of_results(runs[0]).monitor}" if runs else ""
    scores = [selection_score(r)[1] for r in runs if r.get("stages") and key in r["stages"][-1]]
    return float(np.mean(scores)) if scores else float("nan")


def test_sets_of(rows: list[dict]) -> list[str]:
    return [k[: -len("_mean")] for k in rows[0] if k.endswith("_mean") and k != "val_mean"] if rows else []


def is_pooled(row: dict) -> bool:
    """A cv row scored on pooled out-of-fold predictions (with intervals)."""
    return "_repeats" in row


def cell(row: dict, test: str) -> str:
    """`mean (std)` over seeds; a cv row: `mean [lo, hi] (k×repeats)`, `, N incomplete` when repeats were left out."""
    mean, std, n = row[f"{test}_mean"], row[f"{test}_std"], row[f"{test}_n"]
    if is_pooled(row):
        shape = f"{row['folds']}×{n}" + (f", {row['_n_incomplete']} incomplete" if row["_n_incomplete"] else "")
        if n == 0:
            return f"— ({shape})" if test in row["_tests"] else "—"
        return f"{mean:.2f}{interval(row[f'{test}_lo'], row[f'{test}_hi'])} ({shape})"
    if n == 0:
        return "—"
    return f"{mean:.2f} ({std:.2f})" if n > 1 else f"{mean:.2f}"


def interval(lo: float, hi: float) -> str:
    return f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else ""


def ensemble_cell(row: dict, test: str) -> str:
    """A cv row's ensemble: `value [lo, hi] (repeats averaged)`."""
    n = row[f"{test}_n"]
    if n == 0:
        return "—"
    return f"{row[f'{test}_ensemble']:.2f}{interval(row[f'{test}_ensemble_lo'], row[f'{test}_ensemble_hi'])} ({n})"


def markdown(rows: list[dict], metric: str) -> str:
    tests = test_sets_of(rows)
    keys = [*ROW_KEYS, *(["variant"] if any(r.get("variant") for r in rows) else [])]
    lines = [f"{metric.upper()}: mean (std) over seeds; rows train on, columns test on."]
    if any(is_pooled(r) for r in rows):
        lines.append(f"Rows of protocol cv: {metric.upper()} of the pooled out-of-fold predictions of each repeat "
                     f"(seed), mean over repeats [95 % bootstrap interval over materials, {N_BOOTSTRAP} resamples] "
                     "(folds×complete repeats); incomplete repeats are left out.")
    lines.append("val: the runs' mean best validation score of the final stage (the checkpoint-selection score, on "
                 "the validation slice; under protocol=paper that slice is the test split).")
    lines += ["", "| " + " | ".join([*keys, *tests, "val", "seeds", "failed"]) + " |",
              "|" + "---|" * (len(keys) + len(tests) + 3)]
    for row in rows:
        failed = f"**{row['n_failed']} failed**" if row["n_failed"] else "0"
        failed += f" ({row['n_running']} running)" if row["n_running"] else ""
        val = f"{row['val_mean']:.2f}" if np.isfinite(row.get("val_mean", np.nan)) else "—"
        lines.append("| " + " | ".join([*(row.get(k, "") for k in keys), *(cell(row, t) for t in tests),
                                        val, str(len(row["seeds"])), failed]) + " |")
    incomplete = [f"- {label(r)}: {r['incomplete']}" for r in rows if r.get("incomplete")]
    if incomplete:
        lines += ["", "**Incomplete repeats** (left out of the means):", *incomplete]
    pooled = [r for r in rows if is_pooled(r)]
    if pooled:
        lines += ["", f"**Ensemble of the repeats, out of fold** (cv rows): per material, the mean of its out-of-fold "
                      f"predictions over the complete repeats (each seed's fold model that never saw it); "
                      f"{metric.upper()} of these means [95 % bootstrap interval over materials] (repeats averaged). "
                      "`paraisite predict --row` predicts with all k × repeats models of a row.", "",
                  "| row | " + " | ".join(tests) + " |", "|---|" + "---|" * len(tests)]
        lines += [f"| {label(r)} | " + " | ".join(ensemble_cell(r, t) for t in tests) + " |" for r in pooled]
    return "\n".join(lines) + "\n"


def is_committee(row: dict) -> bool:
    return row["_key"][0] == "committee"


def label(row: dict) -> str:
    if "_label" in row:
        return row["_label"]
    return f"{row['backbone']}/{row['pretrain']}/{row['finetune']}/{row['data']}" + (
        "" if row["protocol"] == "holdout" else f" [{row['protocol']}]") + (
        f" ({row['variant']})" if row.get("variant") else "")


def row_configs(runs: list[dict]) -> str:
    """Markdown: for every grid label with several configurations, each setting that differs and its values."""
    groups = group(runs)
    diffs = variants(list(groups))
    by_label: dict[tuple, list[tuple]] = defaultdict(list)
    for key in sorted(groups):
        by_label[key[: len(ROW_KEYS)]].append(key)
    lines = ["# Row configurations", "",
             "Runs are pooled (mean over seeds) only when their whole config matches, seed and runtime keys aside. "
             "Grid labels with several configurations, and the settings that differ:", ""]
    split = {label_: keys for label_, keys in by_label.items() if len(keys) > 1}
    for label_, keys in split.items():
        names = list(dict.fromkeys(n for key in keys for n in diffs[key]))
        lines += [f"## {'/'.join(label_)}", "", "| setting | " + " | ".join(f"row {i + 1}" for i in range(len(keys))) + " |",
                  "|---|" + "---|" * len(keys)]
        lines += [f"| {n} | " + " | ".join(diffs[key].get(n, "") for key in keys) + " |" for n in names]
        lines += ["| runs | " + " | ".join(", ".join(Path(r.get("dir", "?")).name for r in groups[key]) for key in keys)
                  + " |", ""]
    if not split:
        lines.append("None: every row holds one configuration.")
    return "\n".join(lines) + "\n"


def heatmap(rows: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = test_sets_of(rows)
    values = np.array([[r[f"{t}_mean"] for t in tests] for r in rows])
    tall = any(map(is_pooled, rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(tests) + 4, (0.6 if tall else 0.45) * len(rows) + 1.5))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(tests)), tests)
    ax.set_yticks(range(len(rows)), [label(r) + (" (failed runs)" if r["n_failed"] else "") for r in rows])
    for i, row in enumerate(rows):
        for j, test in enumerate(tests):
            dark = np.isfinite(values[i, j]) and image.norm(values[i, j]) > 0.5
            ax.text(j, i, heat_cell(row, test), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xlabel("test on")
    ax.set_title(f"{metric.upper()} (mean (std) over seeds" + ("; cv rows: pooled out-of-fold, ± half-width of the "
                                                               "95 % interval)" if any(map(is_pooled, rows)) else ")"))
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heat_cell(row: dict, test: str) -> str:
    """A heatmap cell: a cv row's mean and ± half the width of its interval (folds×repeats), else `cell`."""
    if not is_pooled(row) or not row[f"{test}_n"] or not np.isfinite(row[f"{test}_lo"]):
        return cell(row, test)
    half = (row[f"{test}_hi"] - row[f"{test}_lo"]) / 2
    return f"{row[f'{test}_mean']:.2f} ±{half:.2f}\n({row['folds']}×{row[f'{test}_n']}" + (
        f", {row['_n_incomplete']} inc." if row["_n_incomplete"] else "") + ")"


def read_curve(run_dir: Path, stage: str, monitor: str) -> dict[int, float]:
    """Validation score `monitor` (MAPE for κ, else MAE) per epoch of one stage, from its metrics.csv."""
    file = run_dir / "logs" / stage / "metrics.csv"
    if not file.is_file():
        return {}
    with open(file) as f:
        rows = list(csv.DictReader(f))
    key = f"val/{monitor}"
    return {int(r["epoch"]): float(r[key]) for r in rows if r.get(key)}


def curves(runs: list[dict], path: Path) -> None:
    """Mean validation score per epoch for each row and stage (the paper's Figs. 3-5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_stage: dict[str, dict[tuple, list[dict[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for stage in run.get("stages", []):
            curve = read_curve(Path(run["dir"]), stage["name"], Target.of_results(run).monitor)
            if curve:
                by_stage[stage["name"]][row_key(run)].append(curve)
    diffs = variants(sorted({row_key(run) for run in runs}))
    if not by_stage:
        log.warning("no learning curves found (logs/<stage>/metrics.csv)")
    fig, axes = plt.subplots(1, max(len(by_stage), 1), figsize=(6 * max(len(by_stage), 1), 4), squeeze=False)
    for ax, (stage, groups) in zip(axes[0], sorted(by_stage.items())):
        for key, members in sorted(groups.items()):
            epochs = sorted(set().union(*members))
            mean = [np.nanmean([m.get(e, np.nan) for m in members]) for e in epochs]
            variant = short_variant(diffs[key])
            ax.plot(epochs, mean, label="/".join(key[1:4]) + (f" ({variant})" if variant else "") + f" (n={len(members)})")
        ax.set(title=f"stage {stage}", xlabel="epoch", ylabel="validation MAPE (κ) or MAE", yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def find_row(rows: list[dict], name: str, option: str = "--compare") -> dict:
    """The row whose label (`label`) is `name`, else the one row whose label contains it (a committee's or a
    choice's: starts with it, so that a member's name does not name the rows made of it too)."""
    labels = [label(r) for r in rows]
    exact = [r for r, text in zip(rows, labels) if text == name]
    found = exact or [r for r, text in zip(rows, labels)  # a committee by its label's start ("committee: …")
                      if (text.startswith(name) if text.startswith((COMMITTEE, SELECTED)) else name in text)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ParaisiteError(f"{option} {name!r}: no row is labelled so; the rows are: " + "; ".join(labels))
    raise ParaisiteError(f"{option} {name!r} names {len(found)} rows ({'; '.join(map(label, found))}): give more "
                         "of the label")


def row_runs(paths: list[str | Path], name: str) -> tuple[str, list[str]]:
    """(label, folders of its finished runs) of the one row under `paths` that `name` names (as `--compare`):
    e.g. the k fold runs × repeats of a cv grid point, the ensemble of `paraisite predict --row`."""
    row = find_row(rows_of(find_runs(paths)), name, "--row")
    return label(row), [r["dir"] for r in row["_members"] if r.get("status") == "ok"]


def repeats_of(row: dict, as_ensemble: bool = False) -> dict:
    """{seed: {test set: Repeat}}: a cv row's complete repeats, else each finished run's test predictions;
    `as_ensemble`: {"committee": {test set: the ensemble of the repeats}}, what a committee is paired with."""
    if as_ensemble and not is_committee(row):
        repeats = repeats_of(row)
        tests = dict.fromkeys(t for rep in repeats.values() for t in rep)
        return {"committee": {t: ensemble([repeats[s][t] for s in sorted(repeats, key=seed_order) if t in repeats[s]])
                              for t in tests}}
    if is_pooled(row):
        return row["_repeats"]
    out = {}
    for run in row["_members"]:
        if run.get("status") != "ok":
            continue
        predictions = read_predictions(run)
        if predictions is None:
            raise ParaisiteError(f"{label(row)}: {run.get('dir', 'a run')} has no test_predictions.csv; a paired "
                                 "comparison needs each run's per-record test predictions (runs of older paraisite "
                                 "versions wrote none): rerun it, or compare rows whose runs have them")
        seed = run["config"].get("seed")
        out[seed] = {test: pool(seed, test, [(run, p)]) for test, p in predictions.items()}
    return out


def match(a: Repeat, b: Repeat, names: tuple[str, str], test: str) -> tuple[Repeat, Repeat]:
    """The two repeats restricted to their common ids, in one order; other targets for one id are refused."""
    _, ia, ib = np.intersect1d(a.ids, b.ids, assume_unique=True, return_indices=True)
    a, b = a.subset(ia), b.subset(ib)
    differ = ~np.isclose(a.true, b.true, rtol=1e-6, atol=1e-9)
    if differ.any():
        raise ParaisiteError(f"{names[0]} and {names[1]}: seed {a.seed}, test set {test}: {differ.sum()} id(s) have "
                             f"other targets ({a.ids[differ][0]}: {a.true[differ][0]:g} and {b.true[differ][0]:g}); "
                             "they were not scored on the same data and cannot be paired")
    return a, b


def compare(rows: list[dict], name_a: str, name_b: str, metric: str, n_boot: int = N_BOOTSTRAP,
            n_perm: int = N_PERMUTATIONS) -> list[dict]:
    """Paired A − B per test set, on the predictions both rows made for the same (seed, test set, id): one dict per
    test set (see `stats.paired`)."""
    return compare_rows(find_row(rows, name_a), find_row(rows, name_b), metric, n_boot, n_perm)


def compare_rows(row_a: dict, row_b: dict, metric: str, n_boot: int = N_BOOTSTRAP,
                 n_perm: int = N_PERMUTATIONS) -> list[dict]:
    """`compare` of two rows given as rows."""
    names = label(row_a), label(row_b)
    kinds = kind_of(row_a["_members"]), kind_of(row_b["_members"])
    if kinds[0] != kinds[1]:
        raise ParaisiteError(f"{names[0]} ({kinds[0]}) and {names[1]} ({kinds[1]}) predict different targets")
    either = is_committee(row_a) or is_committee(row_b)  # a committee is paired with the other row's ensemble
    reps_a, reps_b = repeats_of(row_a, either), repeats_of(row_b, either)
    seeds = sorted(set(reps_a) & set(reps_b), key=seed_order)
    out = []
    for test in dict.fromkeys(t for s in seeds for t in reps_a[s] if t in reps_b[s]):
        pairs = [match(reps_a[s][test], reps_b[s][test], names, test) for s in seeds
                 if test in reps_a[s] and test in reps_b[s]]
        pairs = [(a, b) for a, b in pairs if len(a.ids)]
        if not pairs:
            continue
        result = paired([a for a, _ in pairs], [b for _, b in pairs], metric, kinds[0],
                        rng_for("compare", *names, test, metric), n_boot, n_perm)
        out.append({"a": names[0], "b": names[1], "test_set": test, "metric": metric, "a_mean": result["a"],
                    "b_mean": result["b"], "diff": result["diff"], "ci_lo": result["lo"], "ci_hi": result["hi"],
                    "p": result["p"], "n_materials": result["n_materials"], "n_repeats": len(pairs),
                    "seeds": " ".join(str(a.seed) for a, _ in pairs)})
    if not out:
        raise ParaisiteError(f"{names[0]} and {names[1]}: no common (seed, test set, id) predictions to compare "
                             f"(seeds {', '.join(map(str, sorted(reps_a, key=seed_order))) or 'none'} and "
                             f"{', '.join(map(str, sorted(reps_b, key=seed_order))) or 'none'})")
    return out


COMMITTEE = "committee: "  # the start of a committee's label


def named_rows(rows: list[dict], names: list[str], option: str, need: str) -> tuple[list[dict], list[str]]:
    """The rows `names` name (`find_row`) and their labels, for an option that combines rows: two or more, each
    once, all predicting the same target."""
    if len(names) < 2:
        raise ParaisiteError(f"{option} {' '.join(names)}: {need} two rows or more")
    members = [find_row(rows, name, option) for name in names]
    labels = [label(r) for r in members]
    if len(set(labels)) < len(labels):
        raise ParaisiteError(f"{option} names one row twice ({', '.join(labels)})")
    kinds = {text: kind_of(r["_members"]) for r, text in zip(members, labels)}
    if len(set(kinds.values())) > 1:
        raise ParaisiteError(f"{option}: the rows predict different targets (" +
                             ", ".join(f"{k}: {v}" for k, v in kinds.items()) + ")")
    return members, labels


def sources_in(name: str) -> list[str]:
    """The sources of a data or test set name (mix: dataset1 and dataset2); any other name is its own source."""
    return LTC_DATASETS.get(name, [name])


def committee_row(rows: list[dict], names: list[str], metric: str, n_boot: int = N_BOOTSTRAP) -> dict:
    """The committee of the rows `names` (two or more: other backbones, chains…) as a row: on each test set every row
    predicts, per material (those all rows predict), the mean of the rows' own ensembles (`stats.ensemble` of each
    row's repeats: of cv rows, out-of-fold predictions by models that never saw the material), each row weighted
    alike; scored with its interval. Labelled "committee: A + B …", so `--compare` may name it."""
    members, labels = named_rows(rows, names, "--committee", "a committee needs")
    name = " + ".join(labels)
    ensembles = [repeats_of(r, as_ensemble=True)["committee"] for r in members]
    tests = [t for t in dict.fromkeys(t for e in ensembles for t in e) if all(t in e for e in ensembles)]
    joint = {}
    for test in tests:
        own = [e[test] for e in ensembles]
        common = own[0].ids
        for other in own[1:]:
            common = np.intersect1d(common, other.ids)
        if not len(common):  # e.g. one row predicts AGL by formula, another by structure id
            continue
        own = [o.subset(np.isin(o.ids, common)) for o in own]  # ensemble ids are sorted: the same order in all
        for i, other in enumerate(own[1:], 1):
            match(own[0], other, (labels[0], labels[i]), test)  # refuses other targets for one id
        joint[test] = Repeat("committee", common, own[0].true, np.mean([o.pred for o in own], axis=0))
    if not joint:
        raise ParaisiteError(f"--committee {name}: the rows predict no material of a test set in common")
    row = joined_row(members, ("committee", name), {"committee": joint}, variant="", _label=COMMITTEE + name,
                     folds="", incomplete="")
    score_pooled(row, test_sets_of(rows), metric, n_boot)
    return row


def joined_row(members: list[dict], key: tuple, repeats: dict, **fields) -> dict:
    """A row built from other rows (a committee, experts): their runs, `repeats` ({seed: {test set: Repeat}}) and
    `fields`; the grid label's parts are the members' distinct values joined by "+"."""
    runs = [run for r in members for run in r["_members"]]
    row = {k: "+".join(dict.fromkeys(str(r[k]) for r in members)) for k in ROW_KEYS}
    row.update(_key=key, _members=runs, _rows=members, _repeats=repeats, _n_incomplete=0,
               _tests={t for c in repeats.values() for t in c}, n_runs=len(runs),
               n_failed=sum(r.get("n_failed", 0) for r in members), n_running=sum(r.get("n_running", 0) for r in members),
               seeds=list(repeats), val_mean=validation_mean([run for run in runs if run.get("status") == "ok"]))
    row.update(fields)
    return row


def committee(rows: list[dict], names: list[str], metric: str, n_boot: int = N_BOOTSTRAP,
              n_perm: int = N_PERMUTATIONS) -> tuple[dict, list[dict]]:
    """The committee's row (`committee_row`) and one dict per (test set, member row): the committee's metric with
    its 95 % bootstrap interval, and the paired difference committee − that row's ensemble on the same materials."""
    row = committee_row(rows, names, metric, n_boot)
    out = []
    for member in row["_rows"]:
        for c in compare_rows(row, member, metric, n_boot, n_perm):
            test = c["test_set"]
            out.append({"committee": label(row)[len(COMMITTEE):], "test_set": test, "metric": metric,
                        "committee_value": row[f"{test}_mean"], "committee_lo": row[f"{test}_lo"],
                        "committee_hi": row[f"{test}_hi"], "member": label(member), "member_value": c["b_mean"],
                        "diff": c["diff"], "ci_lo": c["ci_lo"], "ci_hi": c["ci_hi"], "p": c["p"],
                        "n_materials": c["n_materials"], "member_repeats": len(repeats_of(member))})
    return row, out


def experts(rows: list[dict], names: list[str], metric: str, n_boot: int = N_BOOTSTRAP) -> dict:
    """Per-source experts: a cv row made of rows trained on disjoint data sets (Dataset1, Dataset2) that predicts each
    material with the row trained on the material's own source — on MIX (split per source) each material's
    out-of-fold prediction by its own set's row, whose fold models never saw it. Scored like a cv row on the seeds
    that every row has complete, and named in `--compare`/`--committee` like one (its label ends in
    "(per-source experts)"; experts of rows made of rows, e.g. choices: "per-source experts: A + B")."""
    members, labels = named_rows(rows, names, "--experts", "experts need")
    not_cv = [text for row, text in zip(members, labels) if not is_pooled(row)]
    if not_cv:
        raise ParaisiteError(f"--experts: {', '.join(not_cv)}: not a cv row (experts pool out-of-fold predictions)")
    by_source: dict[str, tuple[dict, str]] = {}
    for row, text in zip(members, labels):
        for source in sources_in(row["data"]):
            if source in by_source:
                raise ParaisiteError(f"--experts: {by_source[source][1]} and {text} both train on {source}; each "
                                     "source needs one expert")
            by_source[source] = row, text
    seeds = sorted(set.intersection(*(set(r["_repeats"]) for r in members)), key=seed_order)
    complete: dict = {}
    for seed in seeds:  # a test set whose every source has its expert: mix, though no expert was tested on it
        for test in dict.fromkeys([*test_sets_of(rows), *(t for r in members for t in r["_repeats"][seed])]):
            sources = sources_in(test)
            if all(s in by_source and s in by_source[s][0]["_repeats"][seed] for s in sources):
                parts = [by_source[s][0]["_repeats"][seed][s] for s in sources]
                complete.setdefault(seed, {})[test] = Repeat(seed, *(np.concatenate([getattr(p, field) for p in parts])
                                                                     for field in ("ids", "true", "pred")))
    if not complete:
        raise ParaisiteError(f"--experts {' '.join(labels)}: no seed in which every row has complete out-of-fold "
                             "predictions on its own set")
    left_out = sorted(set().union(*(r["_repeats"] for r in members)) - set(complete), key=seed_order)
    named = {"_label": "per-source experts: " + " + ".join(labels)} if any("_label" in r for r in members) else {}
    row = joined_row(members, ("experts", *labels), complete, data="|".join(r["data"] for r in members), **named,
                     variant="; ".join(dict.fromkeys(["per-source experts", *(r["variant"] for r in members
                                                                               if r["variant"])])),
                     folds="/".join(dict.fromkeys(str(r["folds"]) for r in members)),
                     incomplete="; ".join(f"seed {s}: not complete in every expert" for s in left_out))
    score_pooled(row, test_sets_of(rows), metric, n_boot)
    return row


SELECTED = "selected on validation: "  # the start of a choice's label


def validated_on(run: dict) -> frozenset | int | None:
    """The ids of the records a run's final stage validated on (its val_predictions.csv), else their count."""
    file = Path(run["dir"]) / "val_predictions.csv"
    if file.is_file():
        with open(file, newline="") as f:
            return frozenset(record["id"] for record in csv.DictReader(f))
    return run["stages"][-1].get("n_val") if run.get("stages") else None


def validation_score(run: dict) -> float:
    """A run's `selection_score` (lower is better); a clear error when its results hold none."""
    try:
        return selection_score(run)[1]
    except (KeyError, IndexError):
        raise ParaisiteError(f"--select: {run.get('dir', 'a run')}: its results.json holds no validation score of "
                             "its final stage") from None


def selected(rows: list[dict], names: list[str], metric: str, n_boot: int = N_BOOTSTRAP) -> dict:
    """The recipe chosen on validation, scored out of fold: a cv row made of candidate cv rows trained on one data
    set (other backbones, chains, settings). In each repeat (seed) and fold, the candidate whose fold run has the best
    validation score (`selection_score`: its final stage's, on the fold's validation slice; candidates that validated
    on other records are refused) predicts that fold's test materials. The best candidate's own score flatters a
    choice made on the test folds; this is the choice a user makes without them. `picks`: {candidate: folds
    chosen}. Labelled "selected on validation: A or B …", so `--compare`/`--committee`/`--experts` may name it."""
    members, labels = named_rows(rows, names, "--select", "a choice needs")
    not_cv = [text for row, text in zip(members, labels) if not is_pooled(row)]
    if not_cv:
        raise ParaisiteError(f"--select: {', '.join(not_cv)}: not a cv row (a choice per fold needs the fold runs)")
    for what, values in (("train on", [r["data"] for r in members]), ("have", [f"{r['folds']} folds" for r in members])):
        if len(set(values)) > 1:
            raise ParaisiteError(f"--select: the candidates {what} {', '.join(map(str, dict.fromkeys(values)))}: "
                                 "their validation scores are not on the same records")
    fold_runs = [runs_by_fold(row["_members"]) for row in members]
    seeds = sorted(set.intersection(*(set(r["_repeats"]) for r in members)), key=seed_order)
    picks = dict.fromkeys(labels, 0)
    complete: dict = {}
    taken = []  # the chosen fold runs
    for seed in seeds:
        chosen = []
        for fold in range(int(members[0]["folds"])):
            runs = [by_fold[seed][fold] for by_fold in fold_runs]
            records = [validated_on(run) for run in runs]
            if len(set(records)) > 1:
                raise ParaisiteError(f"--select: seed {seed}, fold {fold}: the candidates validate on other records (" +
                                     ", ".join(f"{text}: {len(r) if isinstance(r, frozenset) else r}" for text, r in
                                               zip(labels, records)) + "); their validation scores do not compare")
            best = int(np.argmin([validation_score(run) for run in runs]))
            picks[labels[best]] += 1
            chosen.append((runs[best], read_predictions(runs[best])))
            taken.append(runs[best])
        tests = [t for t in dict.fromkeys(t for _, p in chosen for t in p) if all(t in p for _, p in chosen)]
        complete[seed] = {test: pool(seed, test, [(run, p[test]) for run, p in chosen]) for test in tests}
    if not complete:
        raise ParaisiteError(f"--select {' '.join(labels)}: no seed in which every candidate has complete folds")
    row = joined_row(members, ("selected", *labels), complete, data=members[0]["data"], variant="",
                     _label=SELECTED + " or ".join(labels), folds=members[0]["folds"], picks=picks,
                     incomplete="; ".join(f"seed {s}: not complete in every candidate" for s in sorted(
                         set().union(*(r["_repeats"] for r in members)) - set(complete), key=seed_order)))
    row["val_mean"] = validation_mean(taken)  # of the chosen runs, not of every candidate's
    score_pooled(row, test_sets_of(rows), metric, n_boot)
    return row


def committees_markdown(results: list[dict], metric: str) -> str:
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    lines = [f"# Committees: {metric.upper()} of the ensemble of several rows", "",
             "Per material (those every member row predicts), the mean of the member rows' own ensembles (each row "
             "weighted alike; of cv rows, every prediction is out of fold: by a model that never saw the material). "
             f"95 % bootstrap interval over materials ({N_BOOTSTRAP} resamples). Beside it, committee − each member "
             "row's own ensemble on the same materials (paired bootstrap interval, permutation p): the committee "
             "holds more models than any member, so part of a gain is averaging more models. "
             f"{better.capitalize()} is better.", "",
             "| committee | test set | committee [95 % CI] | member | member's ensemble (repeats) | "
             "committee − member [95 % CI] | p | materials |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['committee']} | {r['test_set']} | {r['committee_value']:.3f} [{r['committee_lo']:.3f}, "
                     f"{r['committee_hi']:.3f}] | {r['member']} | {r['member_value']:.3f} ({r['member_repeats']}) | "
                     f"{r['diff']:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}] | {r['p']:.4f} | {r['n_materials']} |")
    return "\n".join(lines) + "\n"


def comparisons_markdown(results: list[dict], metric: str) -> str:
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    lines = [f"# Paired comparisons: {metric.upper()} of A − B", "",
             f"On the same materials: the pooled out-of-fold (cv) or test predictions of both rows matched by seed, "
             f"test set and id; mean over the repeats (seeds) both have. 95 % interval: paired bootstrap over "
             f"materials ({N_BOOTSTRAP} resamples); p: two-sided paired permutation test ({N_PERMUTATIONS} random "
             f"swaps of A's and B's predictions per material; smallest p {1 / (1 + N_PERMUTATIONS):.4f}). "
             f"{better.capitalize()} {metric.upper()} is better: a {'positive' if better == 'higher' else 'negative'} "
             "difference favours A.", "",
             "| A | B | test set | A | B | A − B [95 % CI] | p | materials | repeats |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['a']} | {r['b']} | {r['test_set']} | {r['a_mean']:.3f} | {r['b_mean']:.3f} | "
                     f"{r['diff']:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}] | {r['p']:.4f} | {r['n_materials']} | "
                     f"{r['n_repeats']} |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, records: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in records for k in r)), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


def write_report(paths: list[str | Path], output: str | Path, metric: str = "mape",
                 pairs: list[tuple[str, str]] = (), committees: list[list[str]] = (),
                 expert_sets: list[list[str]] = (), choices: list[list[str]] = ()) -> list[dict]:
    """Write table.csv/.md, row_configs.md, heatmap.png, curves.png (failed.txt); for `pairs` of row names
    (`find_row`) comparisons.md/.csv, for `committees` (lists of row names) committees.md/.csv; `choices` (lists of
    row names) add rows chosen per fold on validation (`selected`, their picks in selections.md), `expert_sets`
    (lists of row names) per-source experts rows (`experts`), which pairs and committees may name; returns the
    rows."""
    output = Path(output)
    runs = find_runs(paths)
    rows = summarize(runs, metric)
    rows += [selected(rows, list(names), metric) for names in choices]
    rows += [experts(rows, list(names), metric) for names in expert_sets]
    made = [committee(rows, list(names), metric) for names in committees]  # a bad row name stops before any file
    joint = [c for _, results in made for c in results]
    compared = [c for a, b in pairs for c in compare(rows + [row for row, _ in made], a, b, metric)]
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "table.csv", [{k: v for k, v in r.items() if not k.startswith("_")} |
                                     {"seeds": " ".join(map(str, r["seeds"]))} for r in rows])
    (output / "table.md").write_text(markdown(rows, metric))
    (output / "row_configs.md").write_text(row_configs(runs))
    heatmap(rows, metric, output / "heatmap.png")
    curves(runs, output / "curves.png")
    failed = [r for r in runs if r.get("status") not in ("ok", "running")]
    if failed:
        (output / "failed.txt").write_text("".join(f"{r['dir']}: {r.get('status')}: {r.get('error', '')}\n"
                                                   for r in failed))
    else:
        (output / "failed.txt").unlink(missing_ok=True)  # of an earlier report of these runs
    if compared:
        (output / "comparisons.md").write_text(comparisons_markdown(compared, metric))
        write_csv(output / "comparisons.csv", compared)
    if joint:
        (output / "committees.md").write_text(committees_markdown(joint, metric))
        write_csv(output / "committees.csv", joint)
    if choices:
        (output / "selections.md").write_text(selections_markdown([r for r in rows if "picks" in r]))
    return rows


def selections_markdown(rows: list[dict]) -> str:
    lines = ["# Recipes chosen per fold on validation: how often each candidate was chosen", "",
             "| choice | candidate | folds chosen |", "|---|---|---|"]
    for row in rows:
        lines += [f"| {label(row)} | {name} | {n} of {sum(row['picks'].values())} |" for name, n in row["picks"].items()]
    return "\n".join(lines) + "\n"
