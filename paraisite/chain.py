"""One run: check the config, pre-train if needed, build the model, train the chain stage by stage (leakage filter
per stage), test the final model on every test set.

Each stage trains on its own dataset, selects its best checkpoint on its own validation split, and hands those
weights to the next stage. The run folder receives per-stage checkpoints and CSV logs, stage markers
(`stages/<stage>.json`), the final weights (`model.pt`), the final model's test and validation predictions and
`results.json`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from paraisite import __version__
from paraisite.data.datamodule import LTCDataModule, MultiFidelityDataModule, SplitData, WithValidationInTraining
from paraisite.data.datasets import LTC_FILES, content_hash, source_path, sources_of
from paraisite.errors import ParaisiteError
from paraisite.calibration import Calibration, fit_calibration
from paraisite.evaluate import PREDICTION_COLUMNS, scored_split, test_metrics
from paraisite.files import write_atomic, write_json
from paraisite.predict import load_ensemble, predict
from paraisite.fit import fit
from paraisite.metrics import regression_metrics
from paraisite.models.features import SklearnHead, activations, fit_regressor, load_regressor
from paraisite.models.io import load_checkpoint, model_file_bytes
from paraisite.models.regressor import TransferRegressor
from paraisite.progress import log_plan, progress_callbacks, rich_bar
from paraisite.recipe import (
    backbone_class,
    build_model,
    check_config,
    data_settings,
    flatten,
    pretrained_weights,
    run_identity,
    run_label,
)
from paraisite.runlock import RunLock
from paraisite.settings import Stage, without_added_keys
from paraisite.stage_store import StageStore, stage_key
from paraisite.target import Target
from paraisite.tracking import CSVTracker

log = logging.getLogger(__name__)

RESULTS_FORMAT = 2  # 2: results.json states its target


def is_main_process() -> bool:
    """Rank zero (of all nodes): the only process that writes run files, results and trackers."""
    return getattr(rank_zero_only, "rank", 0) == 0


def stage_record(stage: Stage, module: TransferRegressor, datamodule: SplitData, **measured) -> dict:
    """A stage's entry in results.json (and its marker file)."""
    low = {"low_fidelity": stage.low_fidelity, "low_fidelity_weight": stage.low_fidelity_weight,
           "n_train_low_fidelity": datamodule.n_low_fidelity} if stage.low_fidelity else {}
    return {"name": stage.name, "data": stage.data, **low, "epochs": stage.epochs, **measured,
            "n_train": len(datamodule.splits["train"]), "n_val": len(datamodule.splits["val"]),
            "n_excluded_leakage": datamodule.n_excluded, "dropped": datamodule.dropped}


def train_stage(module: TransferRegressor, stage: Stage, datamodule, cfg: DictConfig, run_dir: Path, tracker,
                key: str | None = None) -> dict:
    """Train one stage and load its best weights. Resumable: a finished stage is skipped, an interrupted one
    continues from its last checkpoint (same run folder, same config). With a `key` (stage sharing), a stage stored
    under it is reused instead of trained, and a stage trained here is stored."""
    if stage.policy == "features":
        return features_stage(module, stage, datamodule, run_dir, cfg.seed)
    done_file, ckpt_dir = run_dir / "stages" / f"{stage.name}.json", run_dir / "checkpoints" / stage.name
    if done_file.is_file():
        module.load_state_dict(load_checkpoint(ckpt_dir / "best.ckpt")["state_dict"])
        log.info("stage %s already finished in %s: loaded its best weights", stage.name, run_dir)
        return json.loads(done_file.read_text())
    if key is None:
        return fit_stage(module, stage, datamodule, cfg, run_dir, tracker)
    store = StageStore()
    with store.claim(key):
        found = store.find(key)
        if found is None:
            result = fit_stage(module, stage, datamodule, cfg, run_dir, tracker)
            store.publish(key, ckpt_dir / "best.ckpt", result, run_dir / "logs" / stage.name / "metrics.csv")
            return result
    log.info("stage %s: reusing the identical stage stored in %s", stage.name, found)
    module.load_state_dict(load_checkpoint(found / "best.ckpt")["state_dict"])
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(found / "best.ckpt", ckpt_dir / "best.ckpt")
    if (found / "metrics.csv").is_file():  # the learning curve, for the report
        (run_dir / "logs" / stage.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(found / "metrics.csv", run_dir / "logs" / stage.name / "metrics.csv")
    result = {**json.loads((found / "stage.json").read_text()), "reused_from": key}
    write_json(done_file, result)
    return result


def fit_stage(module: TransferRegressor, stage: Stage, datamodule, cfg: DictConfig, run_dir: Path, tracker) -> dict:
    """Train a stage here (resuming its latest checkpoint if any); its results entry, also written as its marker."""
    ckpt_dir = run_dir / "checkpoints" / stage.name
    if (ckpt_dir / "latest.ckpt").is_file():
        log.info("stage %s: resuming from %s", stage.name, ckpt_dir / "latest.ckpt")
    fitted = fit(module, stage, datamodule, ckpt_dir, partial(instantiate, cfg.trainer),
                 tracker.stage_loggers(stage.name), progress_callbacks(cfg, stage), rich_bar(cfg),
                 resume_every_s=cfg.resume_every_s)
    result = stage_record(stage, module, datamodule, devices=fitted.devices, best_epoch=fitted.best_epoch,
                          **{f"best_val_{module.monitor}": fitted.best_score}, epochs_run=fitted.epochs_run,
                          resumed_from_epoch=fitted.resumed_from_epoch, wall_time_s=fitted.wall_time_s)
    if is_main_process():
        write_json(run_dir / "stages" / f"{stage.name}.json", result)
        # the marker says the stage is done, so its resume state (weights + optimiser, 3× the model) is dead weight
        (ckpt_dir / "latest.ckpt").unlink(missing_ok=True)
    return result


def refit_stage(module: TransferRegressor, stage: Stage, start: dict, datamodule: SplitData, best_epoch: int,
                cfg: DictConfig, run_dir: Path, tracker) -> dict:
    """The last stage's refit: from the weights it started from, trained on its training and validation records for
    `best_epoch` + 1 epochs (the epoch its validation chose), ending with the last epoch's weights; its results entry
    (named `<stage>_refit`; resumable like a stage, not shared through the stage store)."""
    module.load_state_dict(start)
    again = replace(stage, name=f"{stage.name}_refit", epochs=best_epoch + 1, select_from_epoch=best_epoch,
                    patience=None, refit=False)
    return train_stage(module, again, WithValidationInTraining(datamodule), cfg, run_dir, tracker)


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
    """Tie the run folder to this config, so a relaunch resumes only the same run (not another one's files).
    `run_key.json` holds the key and, from the first launch on, the resolved config — the run's record of what it
    computes, which a relaunch does not rewrite (Hydra rewrites `.hydra/` at every launch, before any check)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    identity = run_identity(resolved)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    marker = run_dir / "run_key.json"
    if marker.is_file():
        claimed = json.loads(marker.read_text())
        if claimed.get("key") != key:
            raise ParaisiteError(f"{run_dir}: holds files of a run with another config{config_change(claimed, identity)}"
                                 f"; pick another hydra.run.dir (or set those keys back to resume it)")
        if "config" in claimed:
            return
    if is_main_process():
        write_json(marker, {"key": key, "config": resolved})


def config_change(claimed: dict, identity: dict) -> str:
    """' (key: recorded → now, …)' for the keys where the folder's recorded config and this one differ ('' when the
    folder records no config)."""
    if "config" not in claimed:
        return ""
    before = flatten(run_identity(claimed["config"]))
    now, missing = flatten(identity), "(unset)"
    changed = [f"{k}: {before.get(k, missing)} → {now.get(k, missing)}" for k in sorted(before.keys() | now.keys())
               if before.get(k, missing) != now.get(k, missing)]
    return f" ({', '.join(changed[:5])}{', …' if len(changed) > 5 else ''})"


def other_test_formulas(dataset: str, datamodule, also: tuple[str, ...] = ()) -> frozenset[str]:
    """Reduced formulas in the test split (this seed) of every LTC source, and of the datasets `also` (the other set
    of a multi-fidelity stage), that `dataset` does not contain.

    A stage never trains on a material that another dataset tests on (e.g. AGL entries of Dataset1's test
    split); its own source's test split is already out of its training data by the split itself.
    """
    own = set(sources_of(dataset))
    formulas: set[str] = set()
    for source in dict.fromkeys([*LTC_FILES, *(s for name in also for s in sources_of(name))]):
        if source not in own:
            dm = datamodule(dataset=source)
            dm.setup()
            formulas |= dm.formulas("test")
    return frozenset(formulas)


def leakage_exclusions(stage: Stage, datamodule) -> tuple[frozenset[str], ...]:
    """The formulas each of `stage.datasets` leaves out of training: those of another LTC source's test split, and
    for a multi-fidelity stage those of the other set's test split (no AGL twin of a DFT test material trains)."""
    return tuple(other_test_formulas(name, datamodule, also=stage.datasets) for name in stage.datasets)


def stage_data(stage: Stage, datamodule, excluded: tuple[frozenset[str], ...], test_mode: str) -> SplitData:
    """A stage's data: its dataset, or with `low_fidelity` both sets, each split and filtered as on its own
    (`excluded`: the leakage exclusions of each of `stage.datasets`)."""
    parts = [datamodule(dataset=name, batch_size=stage.batch_size, exclude_formulas=exclude, test=test_mode)
             for name, exclude in zip(stage.datasets, excluded)]
    return parts[0] if len(parts) == 1 else MultiFidelityDataModule(*parts)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train the chain and test; returns (and writes) the results dict. The config is checked before anything
    is written; one process at a time works in a run folder (a second is refused, see paraisite.runlock)."""
    started = time.perf_counter()
    stages = check_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir) if is_main_process() else None
    try:
        return run_in_folder(cfg, stages, run_dir, started)
    finally:
        if lock is not None:
            lock.release()


def run_in_folder(cfg: DictConfig, stages: list[Stage], run_dir: Path, started: float) -> dict:
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
        results = train_and_test(cfg, stages, run_dir, module, tracker, weights)
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


def stage_keys(cfg: DictConfig, stages: list[Stage], weights: str | None, featurizer,
               excluded: list[tuple[frozenset[str], ...]], test_mode: str, target: Target) -> list[str | None]:
    """The stage store's key of every stage (None: not shared — `stage_cache=false`, several devices, or a
    feature-extraction stage). A first stage's key covers the model it starts from; a later one the key before it."""
    single_process = cfg.trainer.get("devices", 1) == 1 and cfg.trainer.get("num_nodes", 1) == 1
    if not (cfg.stage_cache and single_process):
        return [None] * len(stages)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    settings = {k: v for k, v in asdict(data_settings(cfg)).items() if k != "num_workers"}
    start = {"backbone": {k: v for k, v in resolved["backbone"].items() if k != "data_dir"},
             "weights": Path(weights).name if weights and backbone_class(cfg.backbone).trains_source else weights,
             "head": resolved["head"], "init_seed": cfg.seed}
    keys, previous = [], None
    for i, (stage, exclude) in enumerate(zip(stages, excluded)):
        if stage.policy == "features":
            keys.append(None)
            continue
        data = [[content_hash(source_path(s, cfg.data_dir, featurizer.by_composition)) for s in sources_of(name)]
                for name in stage.datasets]
        previous = stage_key({
            "start": start if previous is None else previous,
            "stage": without_added_keys(asdict(replace(stage, refit=False))),  # a refit follows the stored stage
            "seed": cfg.seed + i,
            "data": data, "featurizer": repr(featurizer), "exclude": [sorted(e) for e in exclude],
            "protocol": cfg.protocol, "fold": cfg.fold, "test": test_mode, "datamodule": settings,
            "target": target.to_json(), "trainer": resolved["trainer"], "version": __version__})
        keys.append(previous)
    return keys


def train_and_test(cfg: DictConfig, stages: list[Stage], run_dir: Path, module: TransferRegressor, tracker,
                   weights: str | None = None) -> dict:
    featurizer = module.backbone.featurizer()
    test_file, predict_file = cfg.data.get("test_file"), cfg.data.get("predict_file")
    if predict_file and not Path(predict_file).exists():  # before any training
        raise ParaisiteError(f"data.predict_file={predict_file}: no such file")
    test_mode = "none" if test_file or predict_file or cfg.protocol == "final" else "carved"
    datamodule = partial(LTCDataModule, featurizer=featurizer, seed=cfg.seed, protocol=cfg.protocol, fold=cfg.fold,
                         data_dir=cfg.data_dir, **asdict(data_settings(cfg)))
    target = module.target
    if test_file:  # no carved test split: nothing that the user's test file holds is trained on
        scoring = datamodule(dataset=test_file, test="all")
        scoring.setup()
        excluded = [(frozenset(scoring.formulas("test")),) * len(stage.datasets) for stage in stages]
    elif test_mode == "carved" and cfg.protocol in ("holdout", "cv") and target.is_kappa:
        excluded = [leakage_exclusions(stage, datamodule) for stage in stages]
    else:
        excluded = [(frozenset(),) * len(stage.datasets) for stage in stages]
    scored = {}
    keys = stage_keys(cfg, stages, weights, featurizer, excluded, test_mode, target)
    stage_results = []
    for i, (stage, exclude, key) in enumerate(zip(stages, excluded, keys)):
        L.seed_everything(cfg.seed + i, workers=True, verbose=False)
        dm = stage_data(stage, datamodule, exclude, test_mode)
        start = {k: v.clone() for k, v in module.state_dict().items()} if stage.refit else None
        stage_results.append(train_stage(module, stage, dm, cfg, run_dir, tracker, key))
    calibration = validate_final_model(module, dm, stages[-1].data, cfg, run_dir) if is_main_process() else None
    if stages[-1].refit:
        L.seed_everything(cfg.seed + len(stages) - 1, workers=True, verbose=False)
        stage_results[-1]["refit"] = refit_stage(module, stages[-1], start, dm, stage_results[-1]["best_epoch"], cfg,
                                                 run_dir, tracker)
    if not is_main_process():
        return {}
    write_atomic(run_dir / "model.pt", model_file_bytes(module, OmegaConf.to_container(cfg, resolve=True)))

    test, rows = {}, []
    if test_file:
        scored = {Path(test_file).name.split(".")[0]: scoring}
    elif test_mode == "carved":
        evaluate_on = cfg.evaluate_on if target.is_kappa else []  # the LTC matrix is for κ models only
        scored = {name if name in evaluate_on else cfg.data.name: datamodule(dataset=name)
                  for name in dict.fromkeys([*evaluate_on, cfg.data.dataset])}
    for name, dm in scored.items():
        dm.setup()
        true, pred, predictions = scored_split(module, dm, "test", name, cfg.fold, cfg.seed)
        test[name] = test_metrics(module, dm, true, pred)
        rows += predictions
    write_predictions(run_dir / "test_predictions.csv", rows)
    if predict_file:  # inputs without targets (e.g. a held-back test split): the final model's predictions
        predict([predict_file], load_ensemble([run_dir], data_dir=cfg.data_dir), run_dir / "predictions.csv")
    return {
        "format": RESULTS_FORMAT,
        "status": "ok",
        "config": run_label(cfg),
        "target": target.to_json(),
        "stages": stage_results,
        "calibration": calibration and calibration.to_json(),  # null: the predictions are not scaled
        "test": test,
        "test_file": test_file,  # the user's test file that scored the model (null: the protocol's test splits)
        "predict_file": predict_file,  # inputs without targets, predicted into predictions.csv (no test carved)
        "unit": target.unit,  # of MAE / RMSE
        "source_model": module.backbone.source_info,  # a source model the framework trained
        "versions": {"paraisite": __version__, "torch": torch.__version__, "lightning": L.__version__,
                     "python": platform.python_version()},
    }


def validate_final_model(module: TransferRegressor, datamodule: SplitData, dataset: str, cfg: DictConfig,
                         run_dir: Path) -> Calibration | None:
    """Write the final model's predictions of its last stage's validation split (of `dataset`; `val_predictions.csv`,
    not calibrated; with a refit: of the model the validation chose, before the refit); with `calibrate`, fit the
    calibration factor on them and set it in the model (None: not asked)."""
    datamodule.setup()  # not yet when every stage was loaded (finished before, or from the stage store)
    true, pred, rows = scored_split(module, datamodule, "val", dataset, cfg.fold, cfg.seed)
    write_predictions(run_dir / "val_predictions.csv", rows)
    if not cfg.get("calibrate"):  # check_config refused it for other targets and protocol=paper
        return None
    if not len(true):
        raise ParaisiteError("calibrate=true: the final stage has no validation records to fit the factor on")
    calibration = fit_calibration(true, pred)
    module.output_scale = calibration.scale
    log.info("calibration: predictions × %.3f (validation MAPE %.4f → %.4f on %d records)", calibration.scale,
             calibration.val_mape_raw, calibration.val_mape, calibration.n_val)
    return calibration


def write_predictions(path: Path, rows: list[dict]) -> None:
    """test_predictions.csv: one row per test record and test set (PREDICTION_COLUMNS), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PREDICTION_COLUMNS)
    writer.writeheader()
    writer.writerows({**r, "fold": "" if r["fold"] is None else r["fold"]} for r in rows)
    write_atomic(path, buffer.getvalue())
