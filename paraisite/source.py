"""Source pre-training for backbones whose weights the framework trains itself (ElemNet on a composition table).

An explicit step that a run takes before building its model (`recipe.pretrained_weights`), never a constructor's
side effect. The source model is trained once per (architecture, table content, `SourceTraining`) with the same
loop as every stage (`fit.fit`) and cached under `<cache>/sources/<table>-<key>/`: `weights.pt` (tensors only),
`source.json` (settings, test MAE, timings) and the CSV training log. Concurrent runs that need the same source
model wait on a file lock and reuse it; an interrupted training resumes from its latest checkpoint.

The split is formula-level (the rows of one formula, polymorphs, share a split), and a table of formation energies
keeps the lowest row per formula (the ground state: `GROUND_STATE_TABLES`), as composition models are trained.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from paraisite.contracts import Backbone
from paraisite.data.datamodule import LTCDataModule
from paraisite.data.datasets import GROUND_STATE_TABLES, content_hash, source_path
from paraisite.errors import ParaisiteError
from paraisite.evaluate import test_metrics
from paraisite.files import write_atomic, write_json
from paraisite.fit import fit
from paraisite.models.heads import LinearHead
from paraisite.models.io import safe_load, tensor_file_bytes
from paraisite.models.regressor import TransferRegressor
from paraisite.paths import cache_dir
from paraisite.progress import source_progress
from paraisite.settings import SourceTraining, Stage
from paraisite.target import Target

log = logging.getLogger(__name__)

SOURCE_FORMAT = 2  # 2: formula-level split, ground state per formula for GROUND_STATE_TABLES
RESUME_EVERY_S = 120.0


@dataclass(frozen=True)
class SourceModel:
    state_dict: dict  # the backbone's weights, the source output layer included (source_weight/bias)
    mean: float  # target normaliser of the source task
    std: float
    info: dict  # source.json (+ the cache folder's name)


def source_dir(backbone: Backbone, table: str, settings: SourceTraining, data_dir: str | None = None) -> Path:
    identity = {"format": SOURCE_FORMAT, "architecture": backbone.architecture(), "settings": asdict(settings),
                "table": content_hash(source_path(table, data_dir))}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "sources" / f"{table.replace('/', '_')}-{key}"


def pretrain(make_backbone: Callable[[], Backbone], table: str, settings: SourceTraining,
             data_dir: str | None = None) -> Path:
    """The folder of the source model trained on `table` (from the cache, else trained now)."""
    folder = source_dir(make_backbone(), table, settings, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first to finish training, then reuses it
        if not (folder / "weights.pt").is_file():
            train_source(make_backbone, table, settings, data_dir, folder)
    return folder


def read_source_model(folder: str | Path) -> SourceModel:
    folder = Path(folder)
    try:
        payload = safe_load(folder / "weights.pt", "source model")
        info = json.loads((folder / "source.json").read_text())
        return SourceModel(payload["state_dict"], payload["mean"], payload["std"], {"folder": folder.name, **info})
    except (ParaisiteError, OSError, ValueError, KeyError) as exc:
        raise ParaisiteError(f"{folder / 'weights.pt'}: unreadable source model ({exc}); delete the folder to "
                             f"retrain") from None


def train_source(make_backbone: Callable[[], Backbone], table: str, settings: SourceTraining,
                 data_dir: str | None, folder: Path) -> None:
    log.info("training the source model on %s (cached in %s)", table, folder)
    started = time.perf_counter()
    L.seed_everything(settings.seed, workers=True, verbose=False)
    backbone = make_backbone()
    module = TransferRegressor(backbone, LinearHead(backbone.out_dim, from_source=False), Target("generic", table, ""))
    dm = LTCDataModule(table, backbone.featurizer(), seed=settings.seed, batch_size=settings.batch_size,
                       test_fraction=settings.test_fraction, val_fraction=settings.val_fraction,
                       limit=settings.limit, on_bad="skip", data_dir=data_dir, group_by="formula",
                       per_formula="lowest" if table in GROUND_STATE_TABLES else "all")
    dm.setup("fit")
    steps_per_epoch = math.ceil(len(dm.splits["train"]) / settings.batch_size)
    stage = Stage(name="source", data=table, low_fidelity=None, epochs=settings.epochs,
                  batch_size=settings.batch_size, loss="l1", lr=settings.lr, backbone_lr_scale=1.0, weight_decay=0.0,
                  warmup_steps=settings.warmup_epochs * steps_per_epoch, decay_steps=0,
                  final_lr_fraction=settings.final_lr_fraction, policy="all", patience=settings.patience,
                  regressor="random_forest", features_layer=-1, low_fidelity_weight=1.0, ema_epochs=0.0,
                  select_from_epoch=0, refit=False)
    trainer = partial(L.Trainer, accelerator="auto", devices=1, enable_model_summary=False)
    fitted = fit(module, stage, dm, folder / "checkpoints", trainer, CSVLogger(folder, name="log", version=""),
                 [source_progress(table)], resume_every_s=RESUME_EVERY_S)
    module.to("cpu")
    metrics = test_metrics(module, dm)
    state = {**module.backbone.state_dict(), "source_weight": module.head.linear.weight.detach().clone(),
             "source_bias": module.head.linear.bias.detach().clone()}
    write_json(folder / "source.json", {  # before weights.pt, whose presence marks a finished source model
        "table": table, "settings": asdict(settings), "architecture": backbone.architecture(),
        "best_epoch": fitted.best_epoch, "epochs_run": fitted.epochs_run, "best_val_mae": fitted.best_score,
        "n_train": len(dm.splits["train"]), "n_val": len(dm.splits["val"]), "test": metrics,
        "split": f"by {dm.group_by}", "rows_per_formula": dm.per_formula, "left_out_not_lowest": dm.n_not_lowest,
        "resumed_from_epoch": fitted.resumed_from_epoch, "dropped": len(dm.dropped),
        "wall_time_s": round(time.perf_counter() - started, 1),
    })
    payload = {"state_dict": state, "mean": float(module.transform.mean), "std": float(module.transform.std)}
    write_atomic(folder / "weights.pt", tensor_file_bytes(payload))
    log.info("source model on %s: test MAE %.4f (n=%d)", table, metrics["mae"], metrics["n"])

