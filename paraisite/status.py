"""`paraisite status SWEEP_OR_RUN_DIRS...`: where the runs below some folders stand, in one table.

States: **finished** (results.json `status: ok`; its headline test metric on its own data set: MAPE for κ, else
MAE), **failed** (results.json `status: failed`; the one-line error), **running** (no results.json; a file of the
run — `checkpoints/<stage>/latest.ckpt`, `logs/<stage>/metrics.csv`, `stages/*.json`, its Hydra log — written in
the last `stale_after_s` seconds; current stage and epoch from the last row of `logs/<stage>/metrics.csv`),
**interrupted** (no results.json, nothing written lately: its last stage and epoch), **not started** (a Hydra
multirun folder whose `multirun.yaml` lists more jobs than there are run folders).

Read-only: files are only read, never locked or written, and a missing or half-written file (a Slurm array still
writing the folder) is read as absent. The job count of a multirun folder is the product of the sizes of its sweeps
(`hydra.overrides.task` and `hydra.sweeper.params`, Hydra's basic sweeper: `a,b,c`, `range(...)`); other sweepers
(Optuna, ...) and `glob(...)` sweeps give no count, so no "not started" row.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from paraisite.errors import ParaisiteError
from paraisite.paths import run_folders
from paraisite.progress import duration

STATES = ("finished", "running", "interrupted", "failed", "not started")
DEFAULT_STALE_AFTER_S = 600.0


@dataclass
class RunState:
    name: str                 # the run folder, relative to the folder asked about
    state: str
    label: str = ""           # backbone/pretrain/finetune/data s<seed>
    stage: str = ""
    epoch: str = ""
    metric: str = ""
    note: str = ""
    data: str = ""            # finished runs: the headline metric's data set, metric name and value
    metric_name: str = ""
    value: float | None = None
    jobs: int = 1             # a `not started` entry stands for this many jobs


def natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def read_results(folder: Path) -> dict | None:
    text = _read_text(folder / "results.json")
    try:
        result = json.loads(text) if text else None
    except ValueError:  # half-written (written atomically by the framework, but be tolerant)
        return None
    return result if isinstance(result, dict) else None


def _load_yaml(path: Path):
    from omegaconf import OmegaConf

    text = _read_text(path)
    if not text:
        return None
    try:
        return OmegaConf.create(text)
    except Exception:
        return None


def _get(cfg, dotted: str, default=None):
    try:
        for part in dotted.split("."):
            cfg = cfg.get(part)
        return default if cfg is None else cfg
    except Exception:
        return default


def label_of(config: dict | None, cfg=None) -> str:
    """backbone/pretrain/finetune/data s<seed>, from results.json's config, else the run's .hydra/config.yaml."""
    if config:
        parts = [config.get(k, "?") for k in ("backbone", "pretrain", "finetune", "data")]
        seed = config.get("seed", "?")
    elif cfg is not None:
        parts = [_get(cfg, f"{k}.name", "?") for k in ("backbone", "pretrain", "finetune", "data")]
        seed = _get(cfg, "seed", "?")
    else:
        return "?"
    return "/".join(map(str, parts)) + f" s{seed}"


def headline(result: dict) -> tuple[str, str, float] | None:
    """(data set, metric, value) of a finished run: its test metrics on its own data set, MAPE when present (κ)
    else MAE."""
    test = result.get("test") or {}
    data = (result.get("config") or {}).get("data")
    if data not in test:
        if len(test) != 1:
            return None
        data = next(iter(test))
    metrics = test[data] if isinstance(test[data], dict) else {}
    for key in ("mape", "mae"):
        try:
            return str(data), key, float(metrics[key])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def read_metrics_csv(path: Path) -> tuple[int | None, str, float | None]:
    """(last epoch logged, validation metric name, its best value) of a stage's metrics.csv; rows cut short by a
    concurrent write are skipped."""
    text = _read_text(path)
    if not text:
        return None, "", None
    rows = [r for r in csv.DictReader(io.StringIO(text)) if None not in r.values() and None not in r]
    if not rows:
        return None, "", None
    key = "val/mape" if "val/mape" in rows[0] else "val/mae" if "val/mae" in rows[0] else ""
    epoch = None
    for row in reversed(rows):
        try:
            epoch = int(float(row["epoch"]))
            break
        except (KeyError, TypeError, ValueError):
            continue
    values = []
    for row in rows:
        try:
            values.append(float(row[key]))
        except (KeyError, TypeError, ValueError):
            pass
    return epoch, key.removeprefix("val/"), min(values) if values else None


def planned_stages(cfg) -> list[tuple[str, int | None]] | None:
    """[(stage name, epochs)] of a run's config; epochs None for feature-extraction stages or when unknown."""
    if cfg is None:
        return None
    try:
        from paraisite.recipe import stages_of

        return [(s.name, None if s.policy == "features" else s.epochs) for s in stages_of(cfg)]
    except Exception:
        try:
            return [(str(name), None) for name in cfg.finetune.stages]
        except Exception:
            return None


def last_write(folder: Path) -> float | None:
    """The newest modification time of the files a running run keeps writing."""
    files = [folder / ".hydra" / "config.yaml", *folder.glob("*.log"), *folder.glob("checkpoints/*/*.ckpt"),
             *folder.glob("logs/*/metrics.csv"), *folder.glob("stages/*.json"), folder / "run_key.json"]
    times = []
    for file in files:
        try:
            times.append(file.stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def inspect_run(folder: Path, name: str, now: float, stale_after_s: float) -> RunState:
    result = read_results(folder)
    if result is not None and result.get("status") == "ok":
        run = RunState(name, "finished", label_of(result.get("config")))
        best = headline(result)
        if best:
            run.data, run.metric_name, run.value = best
            run.metric = f"test {run.metric_name} {run.value:.4g}"
        stages = result.get("stages") or []
        run.stage = f"{len(stages)}/{len(stages)}" if stages else ""
        if result.get("wall_time_s") is not None:
            run.note = f"took {duration(float(result['wall_time_s']))}"
        return run
    if result is not None and result.get("status") == "failed":
        error = str(result.get("error") or "").strip().splitlines()
        return RunState(name, "failed", label_of(result.get("config"), _load_yaml(folder / ".hydra" / "config.yaml")),
                        note=error[0] if error else "(no error recorded)")
    cfg = _load_yaml(folder / ".hydra" / "config.yaml")
    written = last_write(folder)
    age = now - written if written is not None else None
    state = "running" if age is not None and age <= stale_after_s else "interrupted"
    run = RunState(name, state, label_of(None, cfg))
    run.note = f"last write {duration(age)} ago" if age is not None else "no files yet"
    stages = planned_stages(cfg)
    if not stages:  # no usable config: the stage whose log was written last
        logs = sorted(folder.glob("logs/*/metrics.csv"), key=lambda p: _mtime(p))
        stages = [(p.parent.name, None) for p in logs]
    current = None
    for i, (stage, epochs) in enumerate(stages):
        if not (folder / "stages" / f"{stage}.json").is_file():
            current = (i, stage, epochs)
            break
    if current is None:
        run.stage = "testing" if stages else "?"
        return run
    i, stage, epochs = current
    run.stage = f"{stage} ({i + 1}/{len(stages)})"
    epoch, metric, best = read_metrics_csv(folder / "logs" / stage / "metrics.csv")
    done = 0 if epoch is None else epoch + 1
    run.epoch = f"{done}/{epochs if epochs is not None else '?'}"
    if best is not None:
        run.metric = f"best val {metric} {best:.4g}"
    return run


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def expected_jobs(sweep: Path) -> int | None:
    """How many jobs a Hydra multirun folder's `multirun.yaml` launches (basic sweeper), None when unknown."""
    from omegaconf import OmegaConf

    cfg = _load_yaml(sweep / "multirun.yaml")
    if cfg is None:
        return None
    try:
        hydra = cfg.hydra
        target = str(OmegaConf.to_container(hydra.sweeper, resolve=False).get("_target_", ""))
        if not target.endswith("BasicSweeper"):
            return None
        overrides = [str(o) for o in OmegaConf.to_container(hydra.overrides.task, resolve=False) or []]
        params = OmegaConf.to_container(hydra.sweeper, resolve=False).get("params") or {}
        overrides += [f"{k}={v}" for k, v in params.items()]
        from hydra.core.override_parser.overrides_parser import OverridesParser

        count = 1
        for override in OverridesParser.create().parse_overrides(overrides):
            if override.is_sweep_override():
                count *= len(list(override.sweep_string_iterator()))
        return count
    except Exception:
        return None


def collect(paths: list[str | Path], stale_after_s: float = DEFAULT_STALE_AFTER_S,
            now: float | None = None) -> list[RunState]:
    """The state of every run below `paths` (run folders: `.hydra/config.yaml` or `results.json`), plus one
    `not started` entry per multirun folder with jobs that have no folder yet."""
    now = time.time() if now is None else now
    states: list[RunState] = []
    for root in map(Path, paths):
        if not root.exists():
            raise ParaisiteError(f"{root}: no such run or sweep folder")
        folders = run_folders(root)
        runs = []
        for folder in sorted(folders, key=lambda p: natural_key(str(p))):
            name = str(folder.relative_to(root)) if folder != root else folder.name
            runs.append(inspect_run(folder, name or str(folder), now, stale_after_s))
        states += runs
        sweeps = [p.parent for p in root.rglob("multirun.yaml")]
        for sweep in sorted(sweeps, key=lambda p: natural_key(str(p))):
            expected = expected_jobs(sweep)
            found = sum(1 for f in folders if sweep in f.parents)
            if expected is not None and expected > found:
                where = str(sweep.relative_to(root)) if sweep != root else sweep.name
                states.append(RunState(f"{where}/…", "not started", jobs=expected - found,
                                       note=f"{expected - found} of {expected} job(s) have no run folder yet"))
    return states


def count(states: list[RunState]) -> dict[str, int]:
    counts = {s: 0 for s in STATES}
    for run in states:
        counts[run.state] += run.jobs
    return counts


def best_so_far(states: list[RunState]) -> list[RunState]:
    """The finished run with the lowest headline metric, per (data set, metric)."""
    best: dict[tuple[str, str], RunState] = {}
    for run in states:
        if run.state == "finished" and run.value is not None:
            key = (run.data, run.metric_name)
            if key not in best or run.value < best[key].value:
                best[key] = run
    return [best[k] for k in sorted(best)]


def render(states: list[RunState], paths: list[str | Path] = ()) -> str:
    columns = ("run", "config", "state", "stage", "epoch", "metric", "note")
    rows = [(r.name, r.label, r.state, r.stage, r.epoch, r.metric, r.note) for r in states]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]

    def line(cells) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells[:-1], widths)) + "  " + cells[-1]

    out = [f"paraisite status · {time.strftime('%Y-%m-%d %H:%M:%S')} · {' '.join(map(str, paths))}".rstrip(" ·"),
           line([c.upper() for c in columns]).rstrip()]
    out += [line(row).rstrip() for row in rows]
    counts = count(states)
    total = sum(counts.values())
    out.append(f"{total} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "finished"))
    for run in best_so_far(states):
        out.append(f"best so far on {run.data}: {run.metric_name} {run.value:.4g} ({run.name}, {run.label})")
    return "\n".join(out)


def show(paths: list[str], watch: float = 0, stale_after_s: float = DEFAULT_STALE_AFTER_S, stream=None) -> int:
    """Print the table; with `watch` > 0, again every `watch` seconds until Ctrl-C."""
    stream = stream or sys.stdout
    try:
        while True:
            text = render(collect(paths, stale_after_s), paths)
            if watch and stream.isatty():
                stream.write("\033[2J\033[H")  # clear the screen
            stream.write(text + "\n")
            stream.flush()
            if not watch:
                return 0
            time.sleep(watch)
    except KeyboardInterrupt:
        return 0
