"""Gather many runs' `results.json` into the paper's table (mean (std) over seeds), a heatmap and learning curves.

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

from paraisite.errors import ParaisiteError
from paraisite.recipe import RUNTIME_KEYS, run_label
from paraisite.target import Target

log = logging.getLogger(__name__)

ROW_KEYS = ("backbone", "pretrain", "finetune", "data", "protocol")
TEST_SETS = ("dataset1", "dataset2", "mix", "agl")
NOT_SETTINGS = {"seed", "fold", "hydra"}  # with recipe.RUNTIME_KEYS: what may differ between the runs of one row
SHORT_VARIANT = 3  # differing keys shown in the table's variant column (all of them in row_configs.md)


def find_runs(paths: list[str | Path]) -> list[dict]:
    """Every run under `paths`: its results.json, or a `missing` entry for a run folder without one (crashed)."""
    runs, seen = [], set()
    for root in map(Path, paths):
        if not root.exists():
            raise ParaisiteError(f"{root}: no such run or sweep folder")
        folders = {p.parent.parent for p in root.rglob(".hydra/config.yaml")} | {p.parent for p in root.rglob("results.json")}
        for folder in sorted(folders):
            if folder.resolve() in seen:  # overlapping arguments (a sweep and one of its runs): count it once
                continue
            seen.add(folder.resolve())
            file = folder / "results.json"
            try:
                result = json.loads(file.read_text())
            except (OSError, ValueError) as exc:
                result = {"status": "missing", "error": f"{file}: {exc.__class__.__name__}",
                          "config": _config_from_hydra(folder)}
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
    """The run's resolved config, flattened (`stage_overrides.lr`), without seed and runtime keys; None when its
    folder has no `.hydra/config.yaml`. Cached in the run dict."""
    if "settings" not in run:
        run["settings"] = None
        file = Path(run["dir"]) / ".hydra" / "config.yaml" if run.get("dir") else None
        if file is not None and file.is_file():
            from omegaconf import OmegaConf

            cfg = OmegaConf.load(file)
            try:
                tree = OmegaConf.to_container(cfg, resolve=True)
            except Exception:  # an interpolation that cannot be resolved here: compare it as written
                tree = OmegaConf.to_container(cfg, resolve=False)
            run["settings"] = {k: v for k, v in flatten(tree).items()
                               if k.split(".")[0] not in NOT_SETTINGS | RUNTIME_KEYS}
    return run["settings"]


def flatten(tree, prefix: str = "") -> dict:
    """{dotted key: leaf} of nested dicts (lists are leaves)."""
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def row_key(run: dict) -> tuple[str, ...]:
    """The grid label (ROW_KEYS) and the run's whole configuration (as canonical JSON; '' when unknown)."""
    settings = settings_of(run)
    return (*(str(run.get("config", {}).get(k, "?")) for k in ROW_KEYS),
            "" if settings is None else json.dumps(settings, sort_keys=True, default=str))


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
    """A row averages distinct seeds: two finished runs of one configuration with one seed are refused."""
    first: dict = {}
    for run in members:
        if run.get("status") == "ok":
            seed = run["config"].get("seed")
            if seed in first:
                raise ParaisiteError(f"{first[seed]} and {run.get('dir', '?')}: two finished runs of the same "
                                     f"configuration with seed {seed}; a row averages distinct seeds — report one "
                                     "of them (move the other out of the folders given)")
            first[seed] = run.get("dir", "?")


def summarize(runs: list[dict], metric: str = "mape") -> list[dict]:
    """One row per configuration (the grid label ROW_KEYS + every other setting but the seed): mean/std/n of `metric`
    per test set; `variant` says what sets the row apart from rows of the same label, `settings` all of it."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[row_key(run)].append(run)
    diffs = variants(list(groups))
    test_sets = list(TEST_SETS) + sorted({t for r in runs for t in r.get("test", {})} - set(TEST_SETS))
    rows = []
    for key in sorted(groups):
        members = groups[key]
        check_seeds(members)
        ok = [r for r in members if r.get("status") == "ok"]
        row = dict(zip(ROW_KEYS, key), variant=short_variant(diffs[key]), n_runs=len(members),
                   n_failed=len(members) - len(ok), seeds=sorted(r["config"].get("seed") for r in ok))
        for test in test_sets:
            values = np.array([r["test"][test][metric] for r in ok if metric in r.get("test", {}).get(test, {})], dtype=float)
            row[f"{test}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{test}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            row[f"{test}_n"] = len(values)
        rows.append(row)
    return rows


def test_sets_of(rows: list[dict]) -> list[str]:
    return [k[: -len("_mean")] for k in rows[0] if k.endswith("_mean")] if rows else []


def cell(row: dict, test: str) -> str:
    mean, std, n = row[f"{test}_mean"], row[f"{test}_std"], row[f"{test}_n"]
    if n == 0:
        return "—"
    return f"{mean:.2f} ({std:.2f})" if n > 1 else f"{mean:.2f}"


def markdown(rows: list[dict], metric: str) -> str:
    tests = test_sets_of(rows)
    keys = [*ROW_KEYS, *(["variant"] if any(r.get("variant") for r in rows) else [])]
    lines = [f"{metric.upper()}: mean (std) over seeds; rows train on, columns test on.", "",
             "| " + " | ".join([*keys, *tests, "seeds", "failed"]) + " |",
             "|" + "---|" * (len(keys) + len(tests) + 2)]
    for row in rows:
        failed = f"**{row['n_failed']} failed**" if row["n_failed"] else "0"
        lines.append("| " + " | ".join([*(row.get(k, "") for k in keys), *(cell(row, t) for t in tests),
                                        str(len(row["seeds"])), failed]) + " |")
    return "\n".join(lines) + "\n"


def label(row: dict) -> str:
    return f"{row['backbone']}/{row['pretrain']}/{row['finetune']}/{row['data']}" + (
        "" if row["protocol"] == "holdout" else f" [{row['protocol']}]") + (
        f" ({row['variant']})" if row.get("variant") else "")


def row_configs(runs: list[dict]) -> str:
    """Markdown: for every grid label with several configurations, each setting that differs and its values."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[row_key(run)].append(run)
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
    fig, ax = plt.subplots(figsize=(1.6 * len(tests) + 4, 0.45 * len(rows) + 1.5))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(tests)), tests)
    ax.set_yticks(range(len(rows)), [label(r) + (" (failed runs)" if r["n_failed"] else "") for r in rows])
    for i, row in enumerate(rows):
        for j, test in enumerate(tests):
            dark = np.isfinite(values[i, j]) and image.norm(values[i, j]) > 0.5
            ax.text(j, i, cell(row, test), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xlabel("test on")
    ax.set_title(f"{metric.upper()} (mean (std) over seeds)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def write_report(paths: list[str | Path], output: str | Path, metric: str = "mape") -> list[dict]:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    runs = find_runs(paths)
    rows = summarize(runs, metric)
    with open(output / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "seeds": " ".join(map(str, r["seeds"]))} for r in rows)
    (output / "table.md").write_text(markdown(rows, metric))
    (output / "row_configs.md").write_text(row_configs(runs))
    heatmap(rows, metric, output / "heatmap.png")
    curves(runs, output / "curves.png")
    failed = [r for r in runs if r.get("status") != "ok"]
    if failed:
        (output / "failed.txt").write_text("".join(f"{r['dir']}: {r.get('status')}: {r.get('error', '')}\n"
                                                   for r in failed))
    return rows
