"""ElemNet: a deep MLP on ElemNet's 86 elemental fractions (Jha et al. 2018; Gupta et al. 2021).

The backbone is the 16 hidden layers (1024×4, 512×3, 256×3, 128×3, 64×2, 32×1, ReLU; optional dropout after each
block's last layer — upstream 0.2/0.1/0.3/0.2 after the 1024/512/256/128 blocks, `UPSTREAM_DROPOUTS`, off by default:
see conf/backbone/elemnet.yaml); the 17th layer is the head (`head=linear`). Its pre-trained weights are not published
files: the framework trains the source model itself (`paraisite.source`, before the model is built) and caches it.
"""

from __future__ import annotations

import torch
from torch import nn

from paraisite.contracts import Backbone
from paraisite.data.composition import CompositionFeaturizer
from paraisite.errors import ConfigError
from paraisite.source import read_source_model

WIDTHS, DEPTHS, DROPOUTS = (1024, 512, 256, 128, 64, 32), (4, 3, 3, 3, 2, 1), (0.0,) * 6
UPSTREAM_DROPOUTS = (0.2, 0.1, 0.3, 0.2, 0.0, 0.0)  # keep probabilities 0.8, 0.9, 0.7, 0.8


class ElemNetBackbone(Backbone):
    """Elemental fractions → activations of hidden layer `output_layer` (1-16; None: the last, 32 features).

    `weights`: the folder of a source model (`paraisite.source.pretrain` trains it on the table that
    `weights_by_pretrain` names, once, cached); None: random init. `spec` (architecture + source normaliser, stored
    in every model.pt) rebuilds the network without the data folder.
    """

    trains_source = True

    def __init__(self, widths=WIDTHS, depths=DEPTHS, dropouts=DROPOUTS, output_layer: int | None = None,
                 weights: str | None = None, spec: dict | None = None):
        super().__init__()
        if spec is None:
            spec = {"widths": list(widths), "depths": list(depths), "dropouts": [float(p) for p in dropouts],
                    "output_layer": output_layer, "source_mean": 0.0, "source_std": 1.0}
        if not len(spec["widths"]) == len(spec["depths"]) == len(spec["dropouts"]):
            raise ConfigError("backbone elemnet: widths, depths and dropouts need one entry per block")
        self.spec = dict(spec)
        layers, prev = [], len(CompositionFeaturizer().elements)
        for width, depth, dropout in zip(spec["widths"], spec["depths"], spec["dropouts"]):
            for k in range(depth):
                layers += [nn.Linear(prev, width), nn.ReLU()]
                if dropout and k == depth - 1:
                    layers.append(nn.Dropout(dropout))
                prev = width
        self.layers = nn.Sequential(*layers)
        self.register_buffer("source_weight", torch.zeros(1, prev))  # the source task's output layer (never trained)
        self.register_buffer("source_bias", torch.zeros(1))
        nn.init.kaiming_uniform_(self.source_weight, a=5**0.5)  # as nn.Linear: a scratch head starts the same way
        self.name = "ElemNet (random init)"
        if weights:
            source = read_source_model(weights)
            self.spec["source_mean"], self.spec["source_std"] = source.mean, source.std
            self.load_state_dict(source.state_dict)
            self.source_info, self.name = source.info, f"ElemNet ({source.info['table']})"
        if spec.get("output_layer") is not None:
            self.truncate(spec["output_layer"])

    @property
    def n_hidden(self) -> int:
        return sum(self.spec["depths"])

    def architecture(self) -> dict:
        return {k: self.spec[k] for k in ("widths", "depths", "dropouts")}

    def truncate(self, layer: int) -> None:
        """Keep hidden layers 1..`layer` (negative: counted from the last); features = that layer's activations."""
        k = layer if layer > 0 else self.n_hidden + 1 + layer
        if not 1 <= k <= self.n_hidden:
            raise ConfigError(f"features_layer={layer}: ElemNet has hidden layers 1..{self.n_hidden} "
                              f"(or -1..-{self.n_hidden})")
        linear = [i for i, m in enumerate(self.layers) if isinstance(m, nn.Linear)]
        end = linear[k] if k < len(linear) else len(self.layers)
        self.layers = self.layers[:end]
        self.spec["output_layer"] = k

    @property
    def out_dim(self) -> int:
        return [m for m in self.layers if isinstance(m, nn.Linear)][-1].out_features

    def source_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source_weight, self.source_bias

    def featurizer(self) -> CompositionFeaturizer:
        return CompositionFeaturizer()

    def forward(self, batch) -> torch.Tensor:
        return self.layers(batch.x)

    def source_prediction(self, batch) -> torch.Tensor:
        """The source model's own output (e.g. formation energy, eV/atom)."""
        out = nn.functional.linear(self(batch), self.source_weight, self.source_bias).squeeze(-1)
        return out * self.spec["source_std"] + self.spec["source_mean"]
