"""`fit`: the one training loop. Trains a `TransferRegressor` for one `Stage` on a data module, selects the best
epoch on the validation split (from the stage's `select_from_epoch` on) and loads those weights. Every stage of a
chain and source pre-training use it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging

from paraisite.models.io import load_checkpoint
from paraisite.models.regressor import TransferRegressor
from paraisite.settings import Stage


@dataclass(frozen=True)
class Fitted:
    """What a fit measured."""

    best_epoch: int
    best_score: float  # validation `module.monitor` at the best epoch
    epochs_run: int
    devices: int
    resumed_from_epoch: int
    wall_time_s: float


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


class BestCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` of the best validation score that considers only epochs ≥ `from_epoch` (a burn-in). Both
    hooks it may save from (which one depends on the validation schedule) skip the earlier epochs."""

    def __init__(self, from_epoch: int, **kwargs):
        super().__init__(**kwargs)
        self.from_epoch = from_epoch

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch >= self.from_epoch:
            super().on_train_epoch_end(trainer, module)

    def on_validation_end(self, trainer, module) -> None:
        if trainer.current_epoch >= self.from_epoch:
            super().on_validation_end(trainer, module)


class EpochEMA(WeightAveraging):
    """Exponential moving average of the weights, updated every optimizer step with a time constant of `epochs`
    epochs (decay 1 − 1/(epochs × steps per epoch)), started from the stage's initial weights. Lightning's
    `WeightAveraging` swaps the average in for validation, stores it as a checkpoint's `state_dict` (the raw weights
    beside it, for resuming) and leaves it in the module when training ends."""

    def __init__(self, epochs: float):
        super().__init__(avg_fn=self.average)
        self.epochs, self.decay = epochs, 0.0

    def on_train_start(self, trainer, module) -> None:
        steps_per_epoch = trainer.estimated_stepping_batches / trainer.max_epochs
        self.decay = 1 - 1 / max(self.epochs * steps_per_epoch, 1.0)

    def average(self, averaged, current, num_averaged):
        return averaged + (current - averaged) * (1 - self.decay)


def fit(module: TransferRegressor, stage: Stage, datamodule, checkpoint_dir: Path,
        make_trainer: Callable[..., L.Trainer], loggers, progress: list[Callback], progress_bar: bool = False,
        resume_every_s: float | None = None) -> Fitted:
    """Train `module` on `datamodule` as `stage` says; best weights in `checkpoint_dir/best.ckpt`. `progress`:
    the callbacks that report progress (`progress_bar`: one of them is Rich's live bar). With `resume_every_s`, the
    state is saved to `latest.ckpt` at most that often and an existing one is resumed."""
    datamodule.setup()
    module.start_stage(stage, datamodule.targets("train"))
    monitor = f"val/{module.monitor}"
    # fixed names (no -v1 copies), so a relaunch finds exactly these two files. With weight averaging the best
    # checkpoint is a full one: only then does Lightning let the callback put the average in it.
    best = BestCheckpoint(stage.select_from_epoch, dirpath=checkpoint_dir, filename="best", monitor=monitor, mode="min",
                          enable_version_counter=False, save_weights_only=not stage.ema_epochs)
    latest = checkpoint_dir / "latest.ckpt"
    callbacks: list[Callback] = [best, *([EpochEMA(stage.ema_epochs)] if stage.ema_epochs else [])]
    if resume_every_s is not None:
        callbacks.append(LatestCheckpoint(latest, resume_every_s))
    callbacks += progress
    if stage.patience:
        # not strict: a run killed after its last epoch's checkpoint resumes into no epoch, so no metric to read
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=stage.patience, strict=False))
    trainer = make_trainer(max_epochs=stage.epochs, callbacks=callbacks, logger=loggers,
                           enable_progress_bar=progress_bar)
    resume = resume_every_s is not None and latest.is_file()
    resumed_from = load_checkpoint(latest)["epoch"] + 1 if resume else 0
    started = time.perf_counter()
    trainer.fit(module, datamodule, ckpt_path=latest if resume else None)
    checkpoint = load_checkpoint(best.best_model_path)
    module.load_state_dict(checkpoint["state_dict"])
    return Fitted(best_epoch=int(checkpoint["epoch"]), best_score=float(best.best_model_score),
                  epochs_run=trainer.current_epoch, devices=trainer.world_size, resumed_from_epoch=resumed_from,
                  wall_time_s=round(time.perf_counter() - started, 2))
