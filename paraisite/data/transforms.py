"""Target transforms, fitted on training targets only. κ: y = (log10(κ + c) − mean) / std with the offset c
(`data.log_offset`: 1 as published, 0 for a plain log); any other property: y = (t − mean) / std. Buffers
`mean`/`std` travel with the model (the offset with its config), so predictions are always in the target's units.

`decode` is what every prediction goes through (validation and test metrics, `paraisite predict`): for κ it is
floored at 0. The training loss uses `decode_raw` instead, so a prediction below 0 still gets a gradient towards the
target (a clamp there would make it exactly flat): below κ = 0 the inverse continues along its tangent there,
c·ln10·(y − log10 c), not along 10**y − c, whose slope vanishes as y falls (an output driven far below zero, as the
MAPE loss's 1/κ weights of the lowest targets drive a weak start, would stay there for the whole stage).

Buffers `train_min`/`train_max` hold the range of the training targets (in the target's units): `paraisite predict`
flags predictions far outside it. Files written before they existed load with NaN there (range unknown).
"""

from __future__ import annotations

import math

import torch
from torch import nn

RANGE_BUFFERS = ("train_min", "train_max")
KAPPA_FACTOR = 10.0  # κ: a prediction above 10 × the training maximum, or below a tenth of the minimum, extrapolates
GENERIC_SPANS = 1.0  # other properties: farther than one training range (max − min) beyond either end


class Standardizer(nn.Module):
    floor: float | None = None  # lowest physical value of the target (None: unbounded)

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float64))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float64))
        for name in RANGE_BUFFERS:
            self.register_buffer(name, torch.tensor(math.nan, dtype=torch.float64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # model files and checkpoints written before the range buffers existed: the range is unknown (NaN)
        for name in RANGE_BUFFERS:
            if prefix + "mean" in state_dict and prefix + name not in state_dict:
                state_dict[prefix + name] = torch.tensor(math.nan, dtype=torch.float64)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward_map(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def inverse_map(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def fit(self, target: torch.Tensor, centre: float | None = None) -> Standardizer:
        """Standardise by the training targets: `centre` (transformed units) is what 0 means, else their mean."""
        t = torch.as_tensor(target, dtype=torch.float64)
        y = self.forward_map(t)
        self.mean.fill_(y.mean() if centre is None else centre)
        self.std.fill_(y.std() if len(y) > 1 and y.std() > 0 else 1.0)
        self.train_min.fill_(t.min() if len(t) else math.nan)
        self.train_max.fill_(t.max() if len(t) else math.nan)
        return self

    def encode(self, target: torch.Tensor) -> torch.Tensor:
        return ((self.forward_map(target.double()) - self.mean) / self.std).to(target.dtype)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """The target from the standardised value, without the floor (differentiable everywhere: the loss)."""
        return self.inverse_map(z.double() * self.std + self.mean).to(z.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The prediction in the target's units (float64 inside, z's dtype out), never below `floor`."""
        t = self.decode_raw(z)
        return t if self.floor is None else t.clamp_min(self.floor)

    def reach(self) -> tuple[float, float]:
        """(low, high): predictions outside extrapolate far beyond the training range; (-inf, inf) when unknown."""
        low, high = float(self.train_min), float(self.train_max)
        if not (math.isfinite(low) and math.isfinite(high)):
            return -math.inf, math.inf
        if self.floor is not None:  # κ is log-distributed: compare by factors
            return low / KAPPA_FACTOR, high * KAPPA_FACTOR
        span = GENERIC_SPANS * (high - low)
        return low - span, high + span

    def extrapolation(self, value: float) -> str:
        """'' when `value` is within reach of the training range (or the range is unknown), else why not."""
        low, high = self.reach()
        if low <= value <= high:
            return ""
        how = f"×{KAPPA_FACTOR:g}" if self.floor is not None else "± its width"
        return f"{value:.3g} outside training range [{float(self.train_min):.3g}, {float(self.train_max):.3g}] {how}"


class LogStandardizer(Standardizer):
    """Standardised log10(κ + offset); predictions floored at κ = 0. The offset is the run's `Target.log_offset`
    (its data config), not a buffer: a model is rebuilt from its config before its weights load."""

    floor = 0.0

    def __init__(self, mean: float = 0.0, std: float = 1.0, offset: float = 1.0):
        super().__init__(mean, std)
        self.offset = float(offset)

    def forward_map(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log10(t + self.offset)

    def inverse_map(self, y: torch.Tensor) -> torch.Tensor:
        if self.offset == 0:  # a plain log: κ > 0 everywhere
            return 10**y
        zero = math.log10(self.offset)  # y of κ = 0; below it the tangent there (module docstring)
        return torch.where(y >= zero, 10**y - self.offset, self.offset * math.log(10) * (y - zero))
