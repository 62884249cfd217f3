"""One run: build backbone + head, train the fine-tuning chain stage by stage, test on every LTC test split.

Each stage trains on its own dataset, selects its best checkpoint on its own validation split, and hands those
weights to the next stage. The run folder receives the resolved config, per-stage checkpoints and CSV logs,
the final weights (`model.pt`) and `results.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
import time
import warnings
from dataclasses import fields
from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from paraisite import __version__
from paraisite.data.datamodule import LTCDataModule
from paraisite.data.datasets import LTC_FILES, sources_of
from paraisite.errors import ParaisiteError
from paraisite.evaluate import test_metrics
from paraisite.metrics import kind_of, regression_metrics
from paraisite.files import write_atomic, write_json
from paraisite.runlock import RunFolderBusy, RunLock
from paraisite.safeload import load_error
from paraisite.models.regressor import TrainSettings, TransferRegressor, check_checkpoint_format, model_file_bytes
from paraisite.tracking import CSVTracker

log = logging.getLogger(__name__)

RESULTS_FORMAT = 1
RUNTIME_KEYS = {"progress_bar", "threads", "trainer", "logger", "data_dir", "resume_every_s"}  # may change when a run is resumed
TRAIN_KEYS = {f.name for f in fields(TrainSettings)}


def build(node: DictConfig, **kwargs):
    """Instantiate a config group; `name` (a label) and `stage` (a backbone's training recipe) are not arguments."""
    return instantiate({k: v for k, v in node.items() if k not in ("name", "stage")}, **kwargs)


def stages_of(cfg: DictConfig) -> list[dict]:
    """The chain's stages in order, each = stage_defaults ← stage_by_data[its data] ← the backbone's recipe ←
    stage ← stage_overrides. Only the last stage may be a feature-extraction stage."""
    stages, empty = [], OmegaConf.create({})
    for name, stage in cfg.finetune.stages.items():
        merged = {"name": name}
        for part in (cfg.stage_defaults, cfg.stage_by_data.get(stage.data, empty), cfg.backbone.get("stage", empty),
                     stage, cfg.stage_overrides):
            merged.update(OmegaConf.to_container(part, resolve=True))
        stages.append(merged)
    if any(s.get("policy") == "features" for s in stages[:-1]):
        raise ParaisiteError("policy=features (a scikit-learn regressor on frozen features) must be the last stage")
    return stages


def target_kind(cfg: DictConfig) -> str:
    return cfg.data.get("target", "kappa")


def build_model(cfg: DictConfig) -> TransferRegressor:
    backbone = build(cfg.backbone)
    head = build(cfg.head, in_dim=backbone.out_dim)
    if getattr(head, "from_source", False):  # start from the source model's own output layer
        head.linear.weight.data.copy_(backbone.source_weight)
        head.linear.bias.data.copy_(backbone.source_bias)
    return TransferRegressor(backbone, head, target_kind(cfg))


def is_main_process() -> bool:
    """Rank zero (of all nodes): the only process that writes run files, results and trackers."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


class LatestCheckpoint(Callback):
    """Saves the training state at the end of an epoch once `every_s` seconds have passed since the last save
    (and at the last epoch): what a killed or requeued run resumes from, without a write every short epoch."""

    def __init__(self, path: Path, every_s: float):
        self.path, self.every_s, self.saved_at = path, every_s, time.monotonic()

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        due = trainer.current_epoch + 1 >= trainer.max_epochs or time.monotonic() - self.saved_at >= self.every_s
        if trainer.strategy.broadcast(due):  # every rank must agree: saving is collective under DDP
            trainer.save_checkpoint(self.path, weights_only=False)  # full state: what resuming needs
            self.saved_at = time.monotonic()


def train_stage(module, stage: dict, datamodule, cfg: DictConfig, run_dir: Path, tracker) -> dict:
    """Train one stage and load its best weights. Resumable: a finished stage is skipped, an interrupted one
    continues from its last checkpoint (same run folder, same config)."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

    done_file = run_dir / "stages" / f"{stage['name']}.json"
    ckpt_dir = run_dir / "checkpoints" / stage["name"]
    settings = TrainSettings(**{k: v for k, v in stage.items() if k in TRAIN_KEYS})
    if settings.policy == "features":
        return features_stage(module, stage, settings, datamodule, run_dir, cfg.seed)
    if done_file.is_file():
        module.load_state_dict(load_checkpoint(ckpt_dir / "best.ckpt")["state_dict"])
        log.info("stage %s already finished in %s: loaded its best weights", stage["name"], run_dir)
        return json.loads(done_file.read_text())
    datamodule.setup()
    module.start_stage(settings, datamodule.targets("train"))
    # fixed names (no -v1 copies), so a relaunch finds exactly these two files
    monitor = f"val/{module.monitor}"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min",
                                 enable_version_counter=False, save_weights_only=True)
    latest = LatestCheckpoint(ckpt_dir / "latest.ckpt", cfg.resume_every_s)
    callbacks = [checkpoint, latest] + ([RichProgressBar()] if cfg.progress_bar else [])
    if settings.patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=settings.patience))
    trainer = instantiate(cfg.trainer, max_epochs=stage["epochs"], callbacks=callbacks,
                          logger=tracker.stage_loggers(stage["name"]),
                          enable_progress_bar=bool(cfg.progress_bar))
    last = ckpt_dir / "latest.ckpt"
    resumed_from = load_checkpoint(last)["epoch"] + 1 if last.is_file() else 0
    if resumed_from:
        log.info("stage %s: resuming from %s (epoch %d)", stage["name"], last, resumed_from)
    started = time.perf_counter()
    trainer.fit(module, datamodule, ckpt_path=last if resumed_from else None)
    best = load_checkpoint(checkpoint.best_model_path)
    module.load_state_dict(best["state_dict"])
    result = {
        "name": stage["name"], "data": stage["data"], "epochs": stage["epochs"],
        "devices": trainer.world_size,
        "best_epoch": int(best["epoch"]), f"best_val_{module.monitor}": float(checkpoint.best_model_score),
        "epochs_run": trainer.current_epoch,
        "n_train": len(datamodule.splits["train"]), "n_val": len(datamodule.splits["val"]),
        "n_excluded_leakage": datamodule.n_excluded, "dropped": datamodule.dropped,
        "resumed_from_epoch": resumed_from, "wall_time_s": round(time.perf_counter() - started, 2),
    }
    if is_main_process():
        write_json(done_file, result)
    return result


def features_stage(module, stage: dict, settings: TrainSettings, datamodule, run_dir: Path, seed: int) -> dict:
    """Fit a scikit-learn regressor on the activations of backbone layer `features_layer` (backbone frozen); the
    regressor becomes the head. Resumable: a finished stage reloads its `regressor/<stage>.skops`."""
    from paraisite.models.features import SklearnHead, activations, load_regressor, make_regressor

    done_file, file = run_dir / "stages" / f"{stage['name']}.json", run_dir / "regressor" / f"{stage['name']}.skops"
    if settings.features_layer != -1:
        if not hasattr(module.backbone, "truncate"):
            raise ParaisiteError(f"{module.backbone.name}: offers its output features only (features_layer=-1)")
        module.backbone.truncate(settings.features_layer)
    datamodule.setup()
    module.start_stage(settings, datamodule.targets("train"))
    if done_file.is_file() and file.is_file():
        module.head = SklearnHead(module.backbone.out_dim, load_regressor(file.read_bytes(), str(file)))
        return json.loads(done_file.read_text())
    started = time.perf_counter()
    x_train, y_train = activations(module, datamodule.loader("train", batch_size=256))
    x_val, y_val = activations(module, datamodule.loader("val", batch_size=256))
    regressor = make_regressor(settings.regressor, seed)
    regressor.fit(x_train, module.transform.encode(torch.as_tensor(y_train)).numpy())
    module.head = SklearnHead(x_train.shape[1], regressor)
    val_pred = module.transform.decode(torch.as_tensor(regressor.predict(x_val))).numpy()
    result = {
        "name": stage["name"], "data": stage["data"], "policy": "features", "regressor": settings.regressor,
        "features_layer": settings.features_layer, "n_features": int(x_train.shape[1]),
        f"best_val_{module.monitor}": regression_metrics(y_val, val_pred, module.target)[module.monitor],
        "n_train": len(datamodule.splits["train"]), "n_val": len(datamodule.splits["val"]),
        "n_excluded_leakage": datamodule.n_excluded, "dropped": datamodule.dropped,
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    if is_main_process():
        write_atomic(file, module.head.skops.numpy().tobytes())
        write_json(done_file, result)
    return result


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint of this project, read without unpickling code; clear error on a foreign format."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ParaisiteError(f"{path}: unreadable checkpoint ({load_error(exc)})") from None
    check_checkpoint_format(ckpt, path)
    return ckpt


def claim_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """Tie the run folder to this config, so a relaunch resumes only the same run (not another one's files)."""
    identity = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in RUNTIME_KEYS}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    marker = run_dir / "run_key.json"
    if marker.is_file() and json.loads(marker.read_text()).get("key") != key:
        raise ParaisiteError(f"{run_dir}: holds files of a run with another config; pick another hydra.run.dir")
    if is_main_process():
        write_json(marker, {"key": key})


def other_test_formulas(dataset: str, datamodule) -> frozenset[str]:
    """Reduced formulas in the test split (this seed) of every LTC source that `dataset` does not contain.

    A stage never trains on a material that another dataset tests on (e.g. AGL entries of Dataset1's test
    split); its own source's test split is already out of its training data by the split itself.
    """
    own = set(sources_of(dataset))
    formulas: set[str] = set()
    for source in LTC_FILES:
        if source not in own:
            dm = datamodule(dataset=source)
            dm.setup()
            formulas |= dm.formulas("test")
    return frozenset(formulas)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train the chain and test; returns (and writes) the results dict."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir) if is_main_process() else None  # noqa: F841 (one process per run folder until run() ends)
    claim_run_dir(cfg, run_dir)
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_model(cfg)
    tracker = instantiate(cfg.logger, run_dir=run_dir) if is_main_process() else CSVTracker(run_dir)
    tracker.log_config(OmegaConf.to_container(cfg, resolve=True))
    try:
        results = train_and_test(cfg, run_dir, module, tracker)
    except BaseException:
        tracker.finish("failed")
        raise
    if not is_main_process():  # other ranks only take part in training
        return {}
    results["wall_time_s"] = round(time.perf_counter() - started, 2)
    write_json(run_dir / "results.json", results)
    tracker.log_results(results)
    tracker.finish()
    return results


def train_and_test(cfg: DictConfig, run_dir: Path, module: TransferRegressor, tracker) -> dict:
    featurizer = module.backbone.featurizer()
    datamodule = partial(LTCDataModule, featurizer=featurizer, seed=cfg.seed, protocol=cfg.protocol,
                         data_dir=cfg.data_dir, **cfg.datamodule)
    stage_results = []
    for i, stage in enumerate(stages_of(cfg)):
        L.seed_everything(cfg.seed + i, workers=True, verbose=False)
        leakage_filter = cfg.protocol == "holdout" and target_kind(cfg) == "kappa"
        exclude = other_test_formulas(stage["data"], datamodule) if leakage_filter else frozenset()
        dm = datamodule(dataset=stage["data"], batch_size=stage["batch_size"], exclude_formulas=exclude)
        stage_results.append(train_stage(module, stage, dm, cfg, run_dir, tracker))
    if not is_main_process():
        return {}
    write_atomic(run_dir / "model.pt", model_file_bytes(module, OmegaConf.to_container(cfg, resolve=True)))

    test = {}
    evaluate_on = cfg.evaluate_on if target_kind(cfg) == "kappa" else []  # the LTC matrix is for κ models only
    for name in dict.fromkeys([*evaluate_on, cfg.data.dataset]):
        dm = datamodule(dataset=name, batch_size=64)
        dm.setup()
        test[name if name in evaluate_on else cfg.data.name] = test_metrics(module, dm)
    return {
        "format": RESULTS_FORMAT,
        "status": "ok",
        "config": run_label(cfg),
        "stages": stage_results,
        "test": test,
        "unit": cfg.data.get("unit", "W/mK" if target_kind(cfg) == "kappa" else ""),  # of MAE / RMSE
        "source_model": getattr(module.backbone, "source_info", None),  # a source model the framework trained
        "versions": {"paraisite": __version__, "torch": torch.__version__, "lightning": L.__version__,
                     "python": platform.python_version()},
    }


def run_label(cfg: DictConfig) -> dict:
    """The run's grid point. `data` is what the final stage trained on (AGL for finetune=agl, whatever `data`)."""
    last = stages_of(cfg)[-1]["data"]
    data = cfg.data.name if last == cfg.data.dataset else last
    return {"backbone": cfg.backbone.name, "pretrain": cfg.pretrain.name, "finetune": cfg.finetune.name,
            "data": data, "seed": int(cfg.seed), "protocol": cfg.protocol}


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = results["config"]
    table = Table(title=f"{c['backbone']} · {c['pretrain']} → {c['finetune']} · data={c['data']} · "
                        f"seed={c['seed']} · {c['protocol']}")
    kappa = kind_of(results["test"]) == "kappa"
    keys = ("mape", "mae", "log_mae", "r2", "spearman") if kappa else ("mae", "rmse", "r2", "spearman")
    unit = f" ({results['unit']})" if results.get("unit") else ""
    names = (("MAPE", f"MAE{unit}", "log MAE", "R² (log)", "Spearman ρ") if kappa
             else (f"MAE{unit}", f"RMSE{unit}", "R²", "Spearman ρ"))
    for column in ("test set", "n", *names):
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
    write_json(path, {"format": RESULTS_FORMAT, "status": "failed", "error": error, "config": run_label(cfg)})


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


def main(cfg: DictConfig) -> dict | None:
    """Hydra task: run and print the table. A ParaisiteError becomes a one-line message and a failed results.json;
    in a sweep any failure is recorded that way (traceback in the run log) and the other jobs go on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    quiet_third_party()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
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
        if not isinstance(exc, RunFolderBusy):  # a busy folder belongs to the run that holds it: leave it alone
            record_failure(run_dir / "results.json", message, cfg)
        if multirun:
            return None
        sys.exit(2)
    if results:
        print_table(results)
    return results
