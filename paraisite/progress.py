"""Progress people can watch in a log file (a Slurm job's output, `make run > run.log`), not only on a terminal.

- `log_plan`: one line at the start of a run saying what will happen (stages, epochs, batch sizes, device).
- `EpochProgress`: a Lightning callback. At the start of a stage one line with its dataset sizes after filtering;
  then one plain line per epoch, at most every `every_s` seconds (the first and last epoch always):
  `stage agl (1/2): epoch 3/60 · train/loss 0.412 · val/mape 0.351 (best 0.322) · 42s · ETA 13m18s`.
  Lines go through `logging` (Hydra also writes them to the run folder's train.log), on rank zero only.
- `progress_callbacks`: Rich's bar when stdout is a terminal and `progress_bar` is on, the plain lines otherwise.
- `RateProgress`: the same for `paraisite predict` (structures done / total, rate, ETA).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from paraisite.settings import Stage

log = logging.getLogger("paraisite.progress")

DEFAULT_EVERY_S = 30.0


def duration(seconds: float) -> str:
    """4s, 3m07s, 2h05m, 1d03h."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def rich_bar(cfg) -> bool:
    """Rich's live bar: only when asked (`progress_bar`) and stdout is a terminal; it draws nothing useful in a log."""
    return bool(cfg.progress_bar) and sys.stdout.isatty()


def progress_callbacks(cfg, stage: Stage) -> list[Callback]:
    """The progress callbacks of one chain stage: Rich's bar on a terminal (plus the stage's start line), the plain
    epoch lines otherwise (`progress_bar=false` too). `progress_every_s: null` turns the epoch lines off."""
    names = list(cfg.finetune.stages)
    index = (names.index(stage.name) + 1 if stage.name in names else len(names), len(names))  # else: the refit
    if rich_bar(cfg):
        from lightning.pytorch.callbacks import RichProgressBar

        return [RichProgressBar(), EpochProgress(stage.name, every_s=None, index=index)]
    return [EpochProgress(stage.name, every_s=cfg.progress_every_s, index=index)]


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


class EpochProgress(Callback):
    """One plain line per epoch at most every `every_s` seconds (0: every epoch; None: only the stage's start line),
    the first and last epoch always; rank zero only. Names the stage, `epoch i/N`, the training loss, the
    validation metric the module selects on (`val/<module.monitor>`: MAPE for κ, MAE otherwise) and its best so
    far, the elapsed time and the stage's ETA; the first epoch's line also gives the stage's expected wall time."""

    def __init__(self, stage: str, every_s: float | None = DEFAULT_EVERY_S, index: tuple[int, int] | None = None,
                 emit=None):
        self.stage, self.every_s, self.index = stage, every_s, index
        self.emit = emit or log.info
        self.name = f"stage {stage}" + (f" ({index[0]}/{index[1]})" if index else "")
        self.started = self.printed_at = self.pending = None
        self.first_epoch = 0

    # -- start of the stage: what it trains on
    def on_fit_start(self, trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule  # a SplitData: splits, exclusions and drops are known after setup
        n_train, n_val = len(dm.splits["train"]), len(dm.splits["val"])
        parts = [f"{n_train} train / {n_val} val records after filtering"]
        if dm.n_low_fidelity:
            parts.append(f"{dm.n_low_fidelity} of the train records low fidelity")
        if dm.n_excluded:
            parts.append(f"{dm.n_excluded} excluded (in another set's test split)")
        if dm.dropped:
            parts.append(f"{len(dm.dropped)} unusable dropped")
        steps = math.ceil(n_train / max(trainer.world_size, 1) / dm.batch_size)
        parts.append(f"batch {dm.batch_size} × {trainer.world_size} device(s) → {steps} steps/epoch")
        parts.append(f"{trainer.max_epochs} epochs")
        if trainer.ckpt_path:
            parts.append(f"resuming from {trainer.ckpt_path}")
        self.emit(f"{self.name} starts: " + ", ".join(parts))

    def on_train_start(self, trainer, module) -> None:
        self.started = self.printed_at = time.monotonic()
        self.first_epoch = trainer.current_epoch  # > 0 when resumed

    # -- one line per epoch (throttled)
    def on_train_epoch_end(self, trainer, module) -> None:
        if self.every_s is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        now = time.monotonic()
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        metrics = trainer.callback_metrics
        monitor = module.monitor
        value = _number(metrics.get(f"val/{monitor}"))
        best = _number(metrics.get(f"val/best_{monitor}"))  # the module's own: survives a resume, skips a burn-in
        self.pending = (epoch, total, now, monitor, _number(metrics.get("train/loss")), value, best)
        first, last = epoch == self.first_epoch + 1, epoch >= total or trainer.should_stop
        if first or last or now - self.printed_at >= self.every_s:
            self._print(trainer, last)

    def on_train_end(self, trainer, module) -> None:
        if self.every_s is not None and trainer.is_global_zero and self.pending is not None:
            self._print(trainer, last=True)  # an early-stopped stage: its final epoch, if not printed yet

    def _print(self, trainer, last: bool) -> None:
        epoch, total, now, monitor, loss, value, best = self.pending
        self.pending, self.printed_at = None, now
        elapsed = now - self.started
        rate = elapsed / max(epoch - self.first_epoch, 1)
        line = (f"{self.name}: epoch {epoch}/{total} · train/loss {_fmt(loss)} · val/{monitor} {_fmt(value)} "
                f"(best {_fmt(best)}) · {duration(elapsed)}")
        if last:
            line += " · done" + (" (early stopping)" if epoch < total else "")
        else:
            bound = "≤ " if trainer.early_stopping_callback is not None else ""
            line += f" · ETA {bound}{duration(rate * (total - epoch))}"
            if epoch == self.first_epoch + 1:
                line += f" · stage expected to take {bound}{duration(rate * (total - self.first_epoch))}"
        self.emit(line)


def source_progress(table: str) -> EpochProgress:
    """The plain lines for a source model's pre-training (`paraisite.source.train_source`)."""
    return EpochProgress(f"source model ({table})")


def scoring_plan(cfg) -> str:
    """What the final model is scored on (or predicts), as `chain.train_and_test` decides it."""
    data = cfg.data
    if data.get("test_file"):
        return f"score on {data.test_file}"
    predict = f"predict {data.predict_file}" if data.get("predict_file") else ""
    if predict or cfg.protocol == "final":
        return predict or "no test split (protocol=final)"
    kappa = (data.get("target") or "kappa") == "kappa"
    return f"test on {', '.join(map(str, cfg.evaluate_on)) if kappa else data.name}"


def log_plan(cfg, stages: list[Stage], run_dir: str | Path | None = None) -> str:
    """One line at the start of a run: what it trains (stages: data, epochs, batch size), on what, where it writes."""
    import torch

    parts = []
    for i, s in enumerate(stages, 1):
        if s.policy == "features":
            what = f"{s.regressor} on frozen features (layer {s.features_layer})"
        else:
            what = f"{s.epochs} epochs, batch {s.batch_size}, lr {s.lr}"
            if s.policy != "all":
                what += f", policy {s.policy}"
            if s.patience:
                what += f", early stopping after {s.patience}"
            if s.ema_epochs:
                what += f", weights averaged over ~{s.ema_epochs:g} epochs"
            if s.select_from_epoch:
                what += f", best epoch chosen from epoch {s.select_from_epoch} on"
        low = f" + {s.low_fidelity} (low fidelity, loss × {s.low_fidelity_weight:g})" if s.low_fidelity else ""
        parts.append(f"{i}. {s.name} on {s.data}{low} ({what})")
    trainer = cfg.trainer
    device = f"{trainer.get('accelerator', '?')} × {trainer.get('devices', 1)}"
    if (trainer.get("num_nodes") or 1) > 1:
        device += f" × {trainer.get('num_nodes')} nodes"
    if trainer.get("strategy"):
        device += f" ({trainer.get('strategy')})"
    if torch.cuda.is_available():
        device += f", GPU visible: {torch.cuda.get_device_name(0)}"
    label = " · ".join((cfg.backbone.name, cfg.pretrain.name, cfg.finetune.name, cfg.data.name))
    line = (f"run plan: {label} · seed {cfg.seed} · {cfg.protocol}; {len(stages)} stage(s): "
            + "; ".join(parts) + f"; then {scoring_plan(cfg)}"
            + f"; device {device}, {torch.get_num_threads()} CPU thread(s)"
            + (f"; run folder {run_dir}" if run_dir else ""))
    log.info(line)
    return line


# -- paraisite predict


class RateProgress:
    """`predict: 1536/2228 structures (69%) · 54.2/s · 28s · ETA 13s`, at most every `every_s` seconds (the first
    chunk and the end always), on stderr (stdout holds the result summary). `total` None: done and rate only."""

    def __init__(self, total: int | None = None, every_s: float = 10.0, label: str = "predict",
                 unit: str = "structures", stream=None):
        self.total, self.every_s, self.label, self.unit = total, every_s, label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.started, self.printed_at = 0, time.monotonic(), None

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.printed_at is None or now - self.printed_at >= self.every_s:
            self.print(now)

    def print(self, now: float | None = None, final: bool = False) -> None:
        now = time.monotonic() if now is None else now
        self.printed_at = now
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)" if self.total else \
            f"{self.done} {self.unit}"
        line = f"{self.label}: {count} · {rate:.1f}/s · {duration(elapsed)}"
        if final:
            line += " · done"
        elif self.total and rate > 0 and self.done < self.total:
            line += f" · ETA {duration((self.total - self.done) / rate)}"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.print(final=True)
