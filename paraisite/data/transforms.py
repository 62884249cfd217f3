"""Target transforms, fitted on training targets only. κ: y = (log10(κ + 1) − mean) / std; any other property:
y = (t − mean) / std. Buffers `mean`/`std` travel with the model, so predictions are always in the target's units."""

from __future__ import annotations

import torch
from torch import nn

class Standardizer(nn.Module):
    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float64))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float64))

    def forward_map(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def inverse_map(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def fit(self, target: torch.Tensor) -> Standardizer:
        y = self.forward_map(torch.as_tensor(target, dtype=torch.float64))
        self.mean.fill_(y.mean())
        self.std.fill_(y.std() if len(y) > 1 and y.std() > 0 else 1.0)
        return self

    def encode(self, target: torch.Tensor) -> torch.Tensor:
        return ((self.forward_map(target.double()) - self.mean) / self.std).to(target.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The target from the standardised value (computed in float64, returned in z's dtype)."""
        return self.inverse_map(z.double() * self.std + self.mean).to(z.dtype)


class LogStandardizer(Standardizer):
    """Standardised log10(κ + 1)."""

    def forward_map(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log10(t + 1)

    def inverse_map(self, y: torch.Tensor) -> torch.Tensor:
        return 10**y - 1

