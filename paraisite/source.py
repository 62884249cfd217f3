"""Source pre-training for backbones whose weights the framework trains itself (ElemNet on a composition table).

The source model is trained once per (architecture, table content, training settings) and cached under
`<cache>/sources/<table>-<key>/`: `weights.pt` (tensors only), `source.json` (settings, test MAE, timings) and the
CSV training log. Concurrent runs that need the same source model wait on a file lock and reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import time
from pathlib import Path

import torch

from paraisite.data.datasets import content_hash, source_path
from paraisite.errors import ParaisiteError
from paraisite.files import write_atomic, write_json
from paraisite.paths import cache_dir

log = logging.getLogger(__name__)

SOURCE_FORMAT = 1
SETTINGS = ("epochs", "batch_size", "lr", "patience", "seed", "test_fraction", "val_fraction", "limit")  # values:
# `source_training` in conf/train.yaml (Adam, MAE loss, early stopping on validation MAE)
ARCHITECTURE = ("widths", "depths", "dropouts")


def source_settings(training) -> dict:
    missing = [k for k in SETTINGS if k not in training]
    if missing:
        raise ParaisiteError(f"source_training lacks {missing} (see conf/train.yaml)")
    return {k: training[k] for k in SETTINGS}


def source_dir(spec: dict, table: str, settings: dict, data_dir: str | None = None) -> Path:
    identity = {"format": SOURCE_FORMAT, "architecture": {k: spec[k] for k in ARCHITECTURE}, "settings": settings,
                "table": content_hash(source_path(table, data_dir))}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "sources" / f"{table.replace('/', '_')}-{key}"


def pretrained_elemnet(spec: dict, table: str, training, data_dir: str | None = None):
    """(state dict, (target mean, std), source.json contents) of ElemNet trained on `table` with `training`
    (`source_training` settings): from the cache, else trained now."""
    settings = source_settings(training)
    folder = source_dir(spec, table, settings, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first to finish training, then reuses it
        if not (folder / "weights.pt").is_file():
            train_source(spec, table, settings, data_dir, folder)
    try:
        payload = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        info = json.loads((folder / "source.json").read_text())
        return payload["state_dict"], (payload["mean"], payload["std"]), {"folder": folder.name, **info}
    except Exception as exc:
        raise ParaisiteError(f"{folder / 'weights.pt'}: unreadable source model ({exc}); delete the folder to "
                             f"retrain") from None


def train_source(spec: dict, table: str, settings: dict, data_dir: str | None, folder: Path) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from paraisite.data.datamodule import LTCDataModule
    from paraisite.evaluate import test_metrics
    from paraisite.models.elemnet import ElemNetBackbone
    from paraisite.models.heads import LinearHead
    from paraisite.models.regressor import TrainSettings, TransferRegressor
    from paraisite.progress import source_progress

    log.info("training the ElemNet source model on %s (cached in %s)", table, folder)
    started = time.perf_counter()
    L.seed_everything(settings["seed"], workers=True, verbose=False)
    backbone = ElemNetBackbone(spec={**spec, "output_layer": None})
    module = TransferRegressor(backbone, LinearHead(backbone.out_dim, from_source=False), target="generic")
    dm = LTCDataModule(table, backbone.featurizer(), seed=settings["seed"], batch_size=settings["batch_size"],
                       test_fraction=settings["test_fraction"], val_fraction=settings["val_fraction"],
                       limit=settings["limit"], on_bad="skip", data_dir=data_dir)
    dm.setup()
    module.start_stage(TrainSettings(loss="l1", lr=settings["lr"], final_lr_fraction=1.0), dm.targets("train"))
    best = ModelCheckpoint(dirpath=folder / "checkpoints", filename="best", monitor="val/mae", mode="min",
                           enable_version_counter=False, save_weights_only=True)
    stop = EarlyStopping(monitor="val/mae", mode="min", patience=settings["patience"])
    trainer = L.Trainer(max_epochs=settings["epochs"], accelerator="auto", devices=1,
                        callbacks=[best, stop, source_progress(table)],
                        logger=CSVLogger(folder, name="log", version=""), enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, dm)
    checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"])
    module.to("cpu")
    metrics = test_metrics(module, dm)
    state = {**module.backbone.state_dict(), "source_weight": module.head.linear.weight.detach().clone(),
             "source_bias": module.head.linear.bias.detach().clone()}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "mean": float(module.transform.mean), "std": float(module.transform.std)}, buffer)
    write_json(folder / "source.json", {  # before weights.pt, whose presence marks a finished source model
        "table": table, "settings": settings, "architecture": {k: spec[k] for k in ARCHITECTURE},
        "best_epoch": int(checkpoint["epoch"]), "epochs_run": trainer.current_epoch, "best_val_mae": float(best.best_model_score),
        "n_train": len(dm.splits["train"]), "n_val": len(dm.splits["val"]), "test": metrics,
        "dropped": len(dm.dropped), "wall_time_s": round(time.perf_counter() - started, 1),
    })
    write_atomic(folder / "weights.pt", buffer.getvalue())
    log.info("source model on %s: test MAE %.4f (n=%d)", table, metrics["mae"], metrics["n"])
