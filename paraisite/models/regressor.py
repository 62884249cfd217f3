"""`TransferRegressor`: backbone + head, trained stage by stage on a standardised target (log10(κ+1) for κ)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import nn

from paraisite.data.transforms import target_transform
from paraisite.errors import ParaisiteError
from paraisite.metrics import HEADLINE, METRICS, regression_metrics
from paraisite.safeload import load_error

CHECKPOINT_FORMAT = 2  # 2: the backbone's source output layer is stored as buffers (source_weight/bias)
MODEL_FORMAT = 2  # model.pt: {"format", "config", "state_dict"}
LOSSES = ("auto", "mape", "l1")  # auto: mape for κ, l1 for any other property
POLICIES = ("all", "head", "reinit_head", "features")
REGRESSORS = ("random_forest", "ridge")


@dataclass
class TrainSettings:
    """How one stage trains: loss, optimiser (Adam), cosine decay to `final_lr_fraction` over `decay_steps`, early
    stopping after `patience` epochs without a better validation score (None: off). Policy `features` trains no
    network: the activations of backbone layer `features_layer` feed a scikit-learn `regressor`."""

    loss: str = "auto"
    lr: float = 1e-3
    backbone_lr_scale: float = 1.0
    weight_decay: float = 0.0
    decay_steps: int = 1000
    final_lr_fraction: float = 0.01
    policy: str = "all"
    patience: int | None = None
    regressor: str = "random_forest"
    features_layer: int = -1

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; use one of {LOSSES}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown freezing policy {self.policy!r}; use one of {POLICIES}")
        if self.regressor not in REGRESSORS:
            raise ValueError(f"unknown feature regressor {self.regressor!r}; use one of {REGRESSORS}")


def upgrade_state_dict(state: dict, found: int) -> dict:
    """Rename the keys of an older layout (format 1 kept `backbone.last_layer.*`)."""
    if found == 1:
        names = {"backbone.last_layer.weight": "backbone.source_weight", "backbone.last_layer.bias": "backbone.source_bias"}
        return {names.get(k, k): v for k, v in state.items()}
    return state


def model_file_bytes(module: nn.Module, config: dict) -> bytes:
    """Final weights plus the config that rebuilds the model (with the backbone's `spec`, so no data folder is
    needed to load it); tensors and plain data only."""
    import io

    config = {**config, "backbone": {**config["backbone"], "spec": module.backbone.spec},
              "head": getattr(module.head, "config", None) or config["head"]}
    buffer = io.BytesIO()
    torch.save({"format": MODEL_FORMAT, "config": config, "state_dict": module.state_dict()}, buffer)
    return buffer.getvalue()


def read_model_file(path) -> tuple[dict, dict]:
    """(config, state dict) of a model.pt, read without unpickling code; older formats are upgraded."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ParaisiteError(f"{path}: not a paraisite model file ({load_error(exc)})") from None
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found not in (1, MODEL_FORMAT):
        raise ParaisiteError(f"{path}: model format {found!r}, this paraisite reads formats 1-{MODEL_FORMAT}")
    return payload["config"], upgrade_state_dict(payload["state_dict"], found)


def check_checkpoint_format(checkpoint: dict, source="checkpoint") -> None:
    found = checkpoint.get("paraisite_format")
    if found != CHECKPOINT_FORMAT:
        raise ParaisiteError(f"{source}: checkpoint format {found!r}, this paraisite reads format {CHECKPOINT_FORMAT}")


def cosine_decay(step: int, decay_steps: int, final_fraction: float) -> float:
    """Multiplier of the base lr: cosine from 1 to `final_fraction` over `decay_steps`, then flat."""
    t = min(step, decay_steps) / max(decay_steps, 1)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t))


class TransferRegressor(L.LightningModule):
    """`target` is the kind of property: `kappa` (log10(κ+1) standardised, MAPE selects) or `generic` (standardised,
    MAE selects)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, target: str = "kappa"):
        super().__init__()
        self.backbone, self.head, self.target = backbone, head, target
        self.transform = target_transform(target)
        self.monitor = HEADLINE[target]
        self.settings = TrainSettings()
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._best_val = float("inf")

    def start_stage(self, settings: TrainSettings, train_target: torch.Tensor) -> None:
        """Apply a stage's settings: refit the target scaler on its training targets, (re)set freezing/head."""
        if settings.loss == "mape" and self.target != "kappa":
            raise ParaisiteError("loss=mape needs a positive κ target; use loss=l1 (or auto) for other properties")
        if self.target == "kappa" and bool((torch.as_tensor(train_target) <= 0).any()):
            raise ParaisiteError("κ targets must be > 0; for another property set data.target=generic")
        self.settings = settings
        self._best_val = float("inf")
        self.transform.fit(train_target)
        if settings.policy == "reinit_head":
            self.head.reset_parameters()
        self.backbone.requires_grad_(settings.policy != "head")

    def forward(self, batch) -> torch.Tensor:
        """Standardised prediction z."""
        return self.head(self.backbone(batch))

    def predict_target(self, batch) -> torch.Tensor:
        """Prediction in the target's units (κ in W/mK)."""
        return self.transform.decode(self(batch))

    def loss(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.settings.loss if self.settings.loss != "auto" else "mape" if self.target == "kappa" else "l1"
        if loss == "mape":
            return ((self.transform.decode_raw(z) - target).abs() / target).mean()  # no floor: keeps a gradient below 0
        return (z - self.transform.encode(target)).abs().mean()

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch), batch.y)
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
        metrics = regression_metrics(true.cpu().numpy(), pred.cpu().numpy(), self.target)
        for key in METRICS[self.target]:
            value = metrics.get(key, float("nan"))
            self.log(f"val/{key}", float(value) if np.isfinite(value) else float("inf"), prog_bar=key == self.monitor)
        if np.isfinite(metrics.get(self.monitor, np.nan)):
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
        optimizer = torch.optim.Adam(groups, weight_decay=s.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_decay(step, s.decay_steps, s.final_lr_fraction))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
