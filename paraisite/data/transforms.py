"""Target transform: y = (log10(κ + 1) − mean) / std, fitted on training targets only."""

from __future__ import annotations

import torch
from torch import nn


class LogStandardizer(nn.Module):
    """Buffers `mean`/`std` travel with the model's checkpoint, so predictions are always on the κ scale."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float64))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float64))

    def fit(self, kappa: torch.Tensor) -> LogStandardizer:
        y = torch.log10(torch.as_tensor(kappa, dtype=torch.float64) + 1)
        self.mean.fill_(y.mean())
        self.std.fill_(y.std() if len(y) > 1 and y.std() > 0 else 1.0)
        return self

    def encode(self, kappa: torch.Tensor) -> torch.Tensor:
        return ((torch.log10(kappa.double() + 1) - self.mean) / self.std).to(kappa.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """κ from the standardised value (computed in float64, returned in z's dtype)."""
        return (10 ** (z.double() * self.std + self.mean) - 1).to(z.dtype)
