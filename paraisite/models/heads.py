"""Regression heads on top of backbone features."""

from __future__ import annotations

import torch
from torch import nn

from paraisite.contracts import Head

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh}


class MLPHead(Head):
    """in_dim → widths… → 1, with an activation (and optional dropout) after every hidden layer."""

    def __init__(self, in_dim: int, widths: list[int] = (450, 350, 350), activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        self.in_dim, self.widths, self.activation, self.dropout = in_dim, list(widths), activation, dropout
        layers, prev = [], in_dim
        for width in self.widths:
            layers += [nn.Linear(prev, width), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = width
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features):
        return self.net(features).squeeze(-1)

    def reset_parameters(self) -> None:
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()


class LinearHead(Head):
    """in_dim → 1: ElemNet's output layer. With `from_source`, it starts from the backbone's source output layer
    (full fine-tuning as upstream); policy `reinit_head` starts it afresh."""

    def __init__(self, in_dim: int, from_source: bool = True):
        super().__init__()
        self.linear, self.from_source = nn.Linear(in_dim, 1), from_source

    def forward(self, features):
        return self.linear(features).squeeze(-1)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()

    def load_source_layer(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        if self.from_source:
            self.linear.weight.data.copy_(weight)
            self.linear.bias.data.copy_(bias)
