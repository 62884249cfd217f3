"""`TransferRegressor`: backbone + head, trained stage by stage on a standardised target (log10(κ+1) for κ)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch

from paraisite.contracts import LOW_FIDELITY, Backbone, Head
from paraisite.errors import ParaisiteError
from paraisite.metrics import regression_metrics
from paraisite.models.io import CHECKPOINT_FORMAT, check_checkpoint_format
from paraisite.settings import Stage
from paraisite.target import Target


def cosine_decay(step: int, decay_steps: int, final_fraction: float, warmup_steps: int = 0) -> float:
    """Multiplier of the base lr: linear from 1/`warmup_steps` to 1 over the warm-up, then cosine from 1 to
    `final_fraction` over `decay_steps`, then flat."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = min(step - warmup_steps, decay_steps) / max(decay_steps, 1)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t))


def best_constant(target: torch.Tensor, loss: str, transform) -> float:
    """The constant prediction of least `loss` on `target`, in `transform`'s units (before standardising): for the
    MAPE the median of the targets weighted by 1/target, for L1 the median of the transformed targets."""
    if loss == "mape":
        values = target.sort().values
        weights = 1 / values
        above = torch.cumsum(weights, 0) >= weights.sum() / 2
        return float(transform.forward_map(values[int(above.nonzero()[0])]))
    return float(transform.forward_map(target).median())


class TransferRegressor(L.LightningModule):
    """Backbone + head for one `Target`; `start_stage` sets how the next stage trains."""

    def __init__(self, backbone: Backbone, head: Head, target: Target = Target()):
        super().__init__()
        self.backbone, self.head, self.target = backbone, head, target
        self.transform = target.transform()
        self.monitor = target.monitor
        self.settings: Stage | None = None
        self.output_scale = 1.0  # the κ predictions' calibration factor (`paraisite.calibration`; 1: none)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._best_val = float("inf")

    def start_stage(self, settings: Stage, train_target: torch.Tensor) -> None:
        """Apply a stage's settings: refit the target scaler on its training targets, (re)set freezing/head."""
        if settings.loss == "mape" and not self.target.is_kappa:
            raise ParaisiteError("loss=mape needs a positive κ target; use loss=l1 (or auto) for other properties")
        if self.target.is_kappa and bool((torch.as_tensor(train_target) <= 0).any()):
            raise ParaisiteError("κ targets must be > 0; for another property set data.target=generic")
        self.settings = settings
        self._best_val = float("inf")
        centre = best_constant(torch.as_tensor(train_target, dtype=torch.float64), self.stage_loss, self.transform) \
            if self.target.centre == "loss" else None
        self.transform.fit(train_target, centre)
        if settings.policy == "reinit_head":
            self.head.reset_parameters()
        self.backbone.requires_grad_(settings.policy != "head")

    def forward(self, batch) -> torch.Tensor:
        """Standardised prediction z: the head's, plus the standardised physical baseline times its weight where the
        backbone gives one (`Backbone.baseline`, `baseline_weight`: the head learns the correction)."""
        z = self.head(self.backbone(batch))
        baseline = self.backbone.baseline(batch)
        if baseline is None:
            return z
        known = torch.isfinite(baseline)
        encoded = torch.where(known, self.transform.encode(torch.where(known, baseline, 1.0)).to(z.dtype), 0.0)
        return z + self.backbone.baseline_weight() * encoded

    def predict_target(self, batch) -> torch.Tensor:
        """Prediction in the target's units (κ in W/mK), times the calibration factor."""
        return self.transform.decode(self(batch)) * self.output_scale

    @property
    def stage_loss(self) -> str:
        """The stage's loss: `mape` or `l1` (`auto`: the target's)."""
        return self.target.loss if self.settings.loss == "auto" else self.settings.loss

    def loss(self, z: torch.Tensor, target: torch.Tensor, fidelity: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the records' loss terms; low-fidelity records' terms × the stage's `low_fidelity_weight`."""
        if self.stage_loss == "mape":
            terms = (self.transform.decode_raw(z) - target).abs() / target  # no floor: keeps a gradient below 0
        else:
            terms = (z - self.transform.encode(target)).abs()
        if fidelity is not None:
            terms = torch.where(fidelity == LOW_FIDELITY, terms * self.settings.low_fidelity_weight, terms)
        return terms.mean()

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch), batch.y, batch.fidelity)
        self.log("train/loss", loss, batch_size=len(batch.y), on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        z = self(batch)
        self.log("val/loss", self.loss(z, batch.y), batch_size=len(batch.y), on_epoch=True)
        self._val_outputs.append((batch.y.detach(), self.transform.decode(z).detach()))

    def on_validation_epoch_end(self):
        true = torch.cat([t for t, _ in self._val_outputs])
        pred = torch.cat([p for _, p in self._val_outputs])
        self._val_outputs.clear()
        true, pred = self.all_gather(true).reshape(-1), self.all_gather(pred).reshape(-1)
        metrics = regression_metrics(true.cpu().numpy(), pred.cpu().numpy(), self.target.kind)
        for key in self.target.metrics:
            value = metrics.get(key, float("nan"))
            self.log(f"val/{key}", float(value) if np.isfinite(value) else float("inf"), prog_bar=key == self.monitor)
        selectable = self.current_epoch >= self.settings.select_from_epoch  # the burn-in: see `fit.BestCheckpoint`
        if selectable and np.isfinite(metrics.get(self.monitor, np.nan)):
            self._best_val = min(self._best_val, metrics[self.monitor])
        self.log(f"val/best_{self.monitor}", self._best_val)  # monotone: what early termination watches

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["paraisite_format"] = CHECKPOINT_FORMAT
        checkpoint["best_val"] = self._best_val

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_checkpoint_format(checkpoint)
        self._best_val = checkpoint.get("best_val", float("inf"))

    def configure_optimizers(self):
        s = self.settings
        groups = [{"params": [p for p in self.head.parameters() if p.requires_grad], "lr": s.lr}]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"params": backbone, "lr": s.lr * s.backbone_lr_scale})
        # fused: one kernel per step instead of ~10 per parameter tensor (a batch-8 MEGNet step spent ~15 % there)
        optimizer = torch.optim.Adam(groups, weight_decay=s.weight_decay, fused=True)
        decay_steps = s.decay_steps or int(self.trainer.estimated_stepping_batches) - s.warmup_steps  # 0: the stage
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_decay(step, decay_steps, s.final_lr_fraction, s.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
