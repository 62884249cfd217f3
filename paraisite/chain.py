"""One run: check the config, pre-train if needed, build the model, train the chain stage by stage (leakage filter
per stage), test the final model on every test set.

Each stage trains on its own dataset, selects its best checkpoint on its own validation split, and hands those
weights to the next stage. The run folder receives per-stage checkpoints and CSV logs, stage markers
(`stages/<stage>.json`), the final weights (`model.pt`) and `results.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from paraisite import __version__
from paraisite.data.datamodule import LTCDataModule
from paraisite.data.datasets import LTC_FILES, sources_of
from paraisite.errors import ParaisiteError
from paraisite.evaluate import test_metrics
from paraisite.files import write_atomic, write_json
from paraisite.fit import fit
from paraisite.metrics import regression_metrics
from paraisite.models.features import SklearnHead, activations, fit_regressor, load_regressor
from paraisite.models.io import load_checkpoint, model_file_bytes
from paraisite.models.regressor import TransferRegressor
from paraisite.progress import log_plan, progress_callbacks, rich_bar
from paraisite.recipe import build_model, check_config, data_settings, pretrained_weights, run_label
from paraisite.settings import Stage
from paraisite.tracking import CSVTracker

log = logging.getLogger(__name__)

RESULTS_FORMAT = 2  # 2: results.json states its target
RUNTIME_KEYS = {"progress_bar", "progress_every_s", "threads", "trainer", "logger", "data_dir", "resume_every_s"}  # may
# change when a run is resumed


def is_main_process() -> bool:
    """Rank zero (of all nodes): the only process that writes run files, results and trackers."""
    return getattr(rank_zero_only, "rank", 0) == 0


def stage_record(stage: Stage, module: TransferRegressor, datamodule, **measured) -> dict:
    """A stage's entry in results.json (and its marker file)."""
    return {"name": stage.name, "data": stage.data, "epochs": stage.epochs, **measured,
            "n_train": len(datamodule.splits["train"]), "n_val": len(datamodule.splits["val"]),
            "n_excluded_leakage": datamodule.n_excluded, "dropped": datamodule.dropped}


def train_stage(module: TransferRegressor, stage: Stage, datamodule, cfg: DictConfig, run_dir: Path, tracker) -> dict:
    """Train one stage and load its best weights. Resumable: a finished stage is skipped, an interrupted one
    continues from its last checkpoint (same run folder, same config)."""
    if stage.policy == "features":
        return features_stage(module, stage, datamodule, run_dir, cfg.seed)
    done_file, ckpt_dir = run_dir / "stages" / f"{stage.name}.json", run_dir / "checkpoints" / stage.name
    if done_file.is_file():
        module.load_state_dict(load_checkpoint(ckpt_dir / "best.ckpt")["state_dict"])
        log.info("stage %s already finished in %s: loaded its best weights", stage.name, run_dir)
        return json.loads(done_file.read_text())
    if (ckpt_dir / "latest.ckpt").is_file():
        log.info("stage %s: resuming from %s", stage.name, ckpt_dir / "latest.ckpt")
    fitted = fit(module, stage, datamodule, ckpt_dir, partial(instantiate, cfg.trainer), tracker.stage_loggers(stage.name),
                 progress_callbacks(cfg, stage), rich_bar(cfg), resume_every_s=cfg.resume_every_s)
    result = stage_record(stage, module, datamodule, devices=fitted.devices, best_epoch=fitted.best_epoch,
                          **{f"best_val_{module.monitor}": fitted.best_score}, epochs_run=fitted.epochs_run,
                          resumed_from_epoch=fitted.resumed_from_epoch, wall_time_s=fitted.wall_time_s)
    if is_main_process():
        write_json(done_file, result)
    return result


def features_stage(module: TransferRegressor, stage: Stage, datamodule, run_dir: Path, seed: int) -> dict:
    """Fit a scikit-learn regressor on the activations of backbone layer `features_layer` (backbone frozen); the
    regressor becomes the head. Resumable: a finished stage reloads its `regressor/<stage>.skops`."""
    done_file, file = run_dir / "stages" / f"{stage.name}.json", run_dir / "regressor" / f"{stage.name}.skops"
    if stage.features_layer != -1:
        module.backbone.truncate(stage.features_layer)
    datamodule.setup()
    module.start_stage(stage, datamodule.targets("train"))
    if done_file.is_file() and file.is_file():
        module.head = SklearnHead(module.backbone.out_dim, load_regressor(file.read_bytes(), str(file)))
        return json.loads(done_file.read_text())
    started = time.perf_counter()
    x_train, y_train = activations(module, datamodule.loader("train", batch_size=256))
    x_val, y_val = activations(module, datamodule.loader("val", batch_size=256))

    def val_score(z):  # the stage's validation metric of standardised predictions
        pred = module.transform.decode(torch.as_tensor(z)).numpy()
        return regression_metrics(y_val, pred, module.target.kind)[module.monitor]

    regressor, search = fit_regressor(stage.regressor, seed, x_train,
                                      module.transform.encode(torch.as_tensor(y_train)).numpy(), x_val, val_score,
                                      module.monitor)
    module.head = SklearnHead(x_train.shape[1], regressor)
    result = stage_record(stage, module, datamodule, policy="features", regressor=stage.regressor,
                          features_layer=stage.features_layer, n_features=int(x_train.shape[1]),
                          **{f"best_val_{module.monitor}": val_score(regressor.predict(x_val))}, **search,
                          wall_time_s=round(time.perf_counter() - started, 2))
    if is_main_process():
        write_atomic(file, module.head.skops.numpy().tobytes())
        write_json(done_file, result)
    return result


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
    """Train the chain and test; returns (and writes) the results dict. The config is checked before anything
    is written."""
    started = time.perf_counter()
    stages = check_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    claim_run_dir(cfg, run_dir)
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())
    if is_main_process():
        log_plan(cfg, stages, run_dir)
    weights = pretrained_weights(cfg)  # may train a source model first (cached)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_model(cfg, weights)
    tracker = instantiate(cfg.logger, run_dir=run_dir) if is_main_process() else CSVTracker(run_dir)
    tracker.log_config(OmegaConf.to_container(cfg, resolve=True))
    try:
        results = train_and_test(cfg, stages, run_dir, module, tracker)
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


def train_and_test(cfg: DictConfig, stages: list[Stage], run_dir: Path, module: TransferRegressor, tracker) -> dict:
    featurizer = module.backbone.featurizer()
    datamodule = partial(LTCDataModule, featurizer=featurizer, seed=cfg.seed, protocol=cfg.protocol,
                         data_dir=cfg.data_dir, **asdict(data_settings(cfg)))
    target = module.target
    stage_results = []
    for i, stage in enumerate(stages):
        L.seed_everything(cfg.seed + i, workers=True, verbose=False)
        leakage_filter = cfg.protocol == "holdout" and target.is_kappa
        exclude = other_test_formulas(stage.data, datamodule) if leakage_filter else frozenset()
        dm = datamodule(dataset=stage.data, batch_size=stage.batch_size, exclude_formulas=exclude)
        stage_results.append(train_stage(module, stage, dm, cfg, run_dir, tracker))
    if not is_main_process():
        return {}
    write_atomic(run_dir / "model.pt", model_file_bytes(module, OmegaConf.to_container(cfg, resolve=True)))

    test = {}
    evaluate_on = cfg.evaluate_on if target.is_kappa else []  # the LTC matrix is for κ models only
    for name in dict.fromkeys([*evaluate_on, cfg.data.dataset]):
        dm = datamodule(dataset=name, batch_size=64)
        dm.setup()
        test[name if name in evaluate_on else cfg.data.name] = test_metrics(module, dm)
    return {
        "format": RESULTS_FORMAT,
        "status": "ok",
        "config": run_label(cfg),
        "target": target.to_json(),
        "stages": stage_results,
        "test": test,
        "unit": target.unit,  # of MAE / RMSE
        "source_model": module.backbone.source_info,  # a source model the framework trained
        "versions": {"paraisite": __version__, "torch": torch.__version__, "lightning": L.__version__,
                     "python": platform.python_version()},
    }
