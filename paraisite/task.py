"""The Hydra task behind `train.py`: run, print the table, return the selection score (what sweepers minimise);
turn errors into one line and a failed results.json."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from paraisite.chain import RESULTS_FORMAT, run
from paraisite.errors import ConfigError, ParaisiteError
from paraisite.files import write_json
from paraisite.recipe import check_overrides, check_run_keys, run_label
from paraisite.runlock import RunFolderBusy
from paraisite.target import Target, selection_score

log = logging.getLogger(__name__)
SQLITE = "sqlite:///"  # a local SQLite storage URL: the prefix, then the file's path


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c, target = results["config"], Target.of_results(results)
    if not results["test"]:
        what = f"; predictions of {results['predict_file']} in predictions.csv" if results["predict_file"] else ""
        print(f"no test split (protocol={c['protocol']}{', data.predict_file' if what else ''}){what}")
        return
    table = Table(title=f"{c['backbone']} · {c['pretrain']} → {c['finetune']} · data={c['data']} · "
                        f"seed={c['seed']} · {c['protocol']}")
    unit = f" ({target.unit})" if target.unit else ""
    names = {"mape": "MAPE", "mae": f"MAE{unit}", "rmse": f"RMSE{unit}", "log_mae": "log MAE",
             "r2": "R² (log)" if target.is_kappa else "R²", "spearman": "Spearman ρ"}
    keys = [k for k in target.metrics if k in names]
    for column in ("test set", "n", *(names[k] for k in keys)):
        table.add_column(column, justify="left" if column == "test set" else "right")
    for name, m in results["test"].items():
        table.add_row(name, str(m["n"]), *(f"{m.get(k, float('nan')):.3f}" for k in keys))
    Console(file=sys.stdout).print(table)


def record_failure(path: Path, error: str, cfg: DictConfig) -> None:
    """Mark the run failed (the report lists it), unless the folder already holds a finished run's results."""
    try:
        if json.loads(path.read_text()).get("status") == "ok":
            return
    except (OSError, ValueError):
        pass
    try:
        label = run_label(cfg)
    except Exception:  # a config too broken to label
        label = {}
    write_json(path, {"format": RESULTS_FORMAT, "status": "failed", "error": error, "config": label})


def quiet_third_party() -> None:
    """Hide warnings and tips from dependencies that say nothing about this run."""
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")
    warnings.filterwarnings("ignore", module=r"pymatgen\.")  # parse problems are reported per record instead
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def user_error(exc: BaseException) -> ParaisiteError | None:
    """The ParaisiteError behind `exc` (Hydra's instantiate wraps what constructors raise), if any."""
    while exc is not None and not isinstance(exc, ParaisiteError):
        exc = exc.__cause__ or exc.__context__
    return exc


def share_of_cores(launcher, trainer, multirun: bool, cores: int | None = None) -> tuple[int | None, str]:
    """(torch threads for this job, why) when several processes share the machine, else (None, ''): joblib's
    n_jobs jobs at once, submitit's cpus_per_task (Slurm allocation or local executor), DDP ranks on the CPU."""
    cores = cores or os.cpu_count() or 1
    target = str(launcher.get("_target_", "")) if multirun else ""
    if "joblib" in target.lower():
        jobs = launcher.get("n_jobs") or 1
        jobs = cores if jobs < 0 else jobs
        if jobs > 1:
            return max(1, cores // jobs), f"joblib n_jobs={jobs} on {cores} cores"
    elif "submitit" in target.lower() and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task), f"submitit cpus_per_task={launcher.cpus_per_task}"
    devices = trainer.get("devices", 1)
    if trainer.get("accelerator") == "cpu" and isinstance(devices, int) and devices > 1:
        return max(1, cores // devices), f"{devices} DDP processes on {cores} cores"
    return None, ""


def precheck(argv: list[str]) -> None:
    """Before Hydra composes: refuse unknown typed keys in the overrides with one line (exit 2, nothing written)."""
    try:
        check_overrides(argv)
    except ParaisiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


class OptunaStudy(Callback):
    """Hydra callback of the Optuna presets (conf/hparams_search/), before the study opens: refuse protocol=paper
    (its validation split is the test split, so a search would tune on test) and create the folder of a SQLite
    storage (`sqlite:///PATH`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if config.protocol == "paper":
            raise ConfigError("protocol=paper selects on the test split; a hyper-parameter search must select on "
                              "validation only: use protocol=holdout or cv")
        storage = str(config.hydra.sweeper.storage or "")
        if storage.startswith(SQLITE):
            Path(storage[len(SQLITE):]).parent.mkdir(parents=True, exist_ok=True)


def main(cfg: DictConfig) -> float:
    """Hydra task: run, print the table and return the run's selection score (`selection_score`: the final stage's
    best validation score), which a sweeper minimises (`hparams_search=step3_optuna`); `objective=cv`: every fold of
    protocol=cv, the mean of their scores (`cv_objective`). A ParaisiteError becomes a one-line message and a failed
    results.json (a bad config: nothing written); in a sweep any failure is recorded that way (traceback in the run
    log), returns NaN (Optuna marks the trial failed) and the other jobs go on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    quiet_third_party()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.threads is None:  # no oversubscription: jobs sharing the machine split its cores unless told otherwise
        threads, why = share_of_cores(hydra_cfg.launcher, cfg.trainer, multirun)
        if threads is not None:
            cfg.threads = threads
            log.info("torch threads: %d (%s; threads= overrides)", threads, why)
    if cfg.get("objective") == "cv":
        return cv_objective(cfg, run_dir, multirun)
    return run_job(cfg, run_dir, multirun)


def cv_objective(cfg: DictConfig, run_dir: Path, multirun: bool) -> float:
    """objective=cv: train folds 0 … datamodule.folds-1 of protocol=cv, each a run of its own in `run_dir/fold<i>/`
    (with its `.hydra/config.yaml`, so `paraisite report` pools them as one cv repeat), and return the mean of their
    validation scores — the objective of a hyper-parameter trial on every validation slice, never a test fold; NaN
    when a fold failed (its folder says why)."""
    from omegaconf import OmegaConf

    try:
        check_run_keys(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if multirun:
            return float("nan")
        sys.exit(2)
    scores = []
    for fold in range(cfg.datamodule.folds):
        fold_cfg = cfg.copy()
        fold_cfg.objective, fold_cfg.fold = "run", fold
        fold_dir = run_dir / f"fold{fold}"
        (fold_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(fold_cfg, fold_dir / ".hydra" / "config.yaml")
        scores.append(run_job(fold_cfg, fold_dir, multirun))
    mean = math.fsum(scores) / len(scores)
    log.info("objective=cv: mean validation score over %d folds %.4f (%s)", len(scores), mean,
             ", ".join(f"{s:.4f}" for s in scores))
    return mean


def run_job(cfg: DictConfig, run_dir: Path, multirun: bool) -> float:
    """One run in `run_dir`: its selection score (NaN for a failure in a sweep or on a DDP rank other than zero)."""
    try:
        results = run(cfg, run_dir)
    except Exception as raised:
        exc = user_error(raised)
        if exc is None and not multirun:
            raise
        if exc is None:  # a crash inside a sweep: keep its traceback, record it, let the other jobs run
            log.exception("run failed")
        message = str(exc) if exc is not None else f"{type(raised).__name__}: {raised}"
        print(f"error: {message}", file=sys.stderr)
        # a bad config alone writes nothing; a busy folder belongs to the run that holds it: leave it alone
        if (multirun or not isinstance(exc, ConfigError)) and not isinstance(exc, RunFolderBusy):
            record_failure(run_dir / "results.json", message, cfg)
        if multirun:
            return float("nan")
        sys.exit(2)
    if not results:  # a DDP rank other than zero
        return float("nan")
    print_table(results)
    return selection_score(results)[1]
