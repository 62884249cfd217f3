"""The written contracts between the parts: featurizers, feature sets, backbones and heads.

Adding a backbone = one module with a `Backbone` subclass (and, if it reads inputs no existing featurizer makes, a
`Featurizer`) + one YAML in `conf/backbone/` with `name`, `_target_`, `weights_by_pretrain` and its constructor
arguments. Optional capabilities are declared here with a default, never probed with `hasattr`:

| capability | default | who offers it |
|---|---|---|
| `Backbone.truncate(layer)`: features from an inner layer | refused (output features only) | ElemNet |
| `Backbone.source_layer()`: the source task's output layer | None | MEGNet, M3GNet, ElemNet |
| `Backbone.source_info`: what the framework's source pre-training measured | None | ElemNet (trained here) |
| `Backbone.trains_source`: `weights_by_pretrain` names a table to pre-train on | False (published weights) | ElemNet |
| `Backbone.takes_fidelity`: reads `batch.fidelity` as a state (multi-fidelity stages) | False (refused there) | MEGNet |
| `Head.load_source_layer(weight, bias)`: start from the source output layer | ignored | LinearHead |
| `Head.stored_config()`: what model.pt stores to rebuild the head | None (the run's head config) | SklearnHead |

Physical quantities joined to a backbone's features (`PhysicsAugmented`) are `Descriptors`: Debye–Grüneisen
(`quasiharmonic`), the phonon-BTE κ of a table (`models/phonon_bte.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch import nn

from paraisite.errors import ParaisiteError


HIGH_FIDELITY, LOW_FIDELITY = 0, 1  # a record's fidelity: of the stage's target set, or of its low-fidelity set


class Batch(Protocol):
    """What a feature set's `collate` returns: the backbone's input plus the targets `y` (NaN where unknown) and
    each record's `fidelity` (HIGH_FIDELITY, LOW_FIDELITY), set by multi-fidelity stages; None: all high fidelity
    (every other stage, and prediction)."""

    y: torch.Tensor
    fidelity: torch.Tensor | None


class FeatureSet(Protocol):
    """A featurized dataset: one entry per record, in record order."""

    ids: list[str]
    formulas: list[str]  # reduced formulas (the leakage filter and the split by material use them)
    flags: list[str]  # "" when usable, else why the backbone cannot use the record
    target: torch.Tensor  # (N,) float64, NaN where unknown

    def __len__(self) -> int: ...

    def collate(self, indices) -> Batch: ...


class Featurizer(ABC):
    """Records → a `FeatureSet`, cached on disk by `key` (content hash of the source + the featurizer's settings)."""

    by_composition: ClassVar[bool]  # True: reads a dataset's composition table where one exists (AGL)

    @abstractmethod
    def key(self, content_hash: str, extra: str = "") -> str: ...

    @abstractmethod
    def build(self, records: list) -> FeatureSet: ...

    @abstractmethod
    def save(self, data: FeatureSet, path: Path) -> None: ...

    @abstractmethod
    def load(self, path: Path) -> FeatureSet | None:
        """The cached set, or None when absent or unreadable (it is then rebuilt)."""

    @abstractmethod
    def concat(self, sets: list[FeatureSet]) -> FeatureSet: ...


class Backbone(nn.Module, ABC):
    """A batch → (B, `out_dim`) transfer features.

    The constructor takes `weights` (what `weights_by_pretrain` in the backbone's YAML gives for the run's `pretrain`:
    a published weight set's name, or with `trains_source` the folder of a source model; None: random init) and
    `spec` (set by `spec`, stored in every model.pt: rebuilds the architecture without the data folder).
    """

    trains_source: ClassVar[bool] = False
    takes_fidelity: ClassVar[bool] = False  # forward reads `batch.fidelity` as a state input
    name: str
    spec: dict
    source_info: dict | None = None

    @property
    @abstractmethod
    def out_dim(self) -> int: ...

    @abstractmethod
    def featurizer(self) -> Featurizer: ...

    @abstractmethod
    def forward(self, batch) -> torch.Tensor: ...

    def architecture(self) -> dict:
        """What fixes the network's shape (part of the cache key of source models trained on it)."""
        return dict(self.spec)

    def truncate(self, layer: int) -> None:
        """Make the activations of hidden layer `layer` (negative: from the last) the output features."""
        raise ParaisiteError(f"{self.name}: offers its output features only (features_layer=-1)")

    def source_layer(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(weight, bias) of the source task's output layer, if the backbone keeps it."""
        return None

    def baseline(self, batch) -> torch.Tensor | None:
        """(B,) physical predictions of the target (its units; NaN where there is none) that the head's output
        corrects (Δ-learning: `TransferRegressor` adds their standardised value to the head's); None: the head
        predicts the target alone."""
        return None

    def baseline_weight(self) -> torch.Tensor | float:
        """The weight of the standardised baseline in the prediction (1: the head corrects the whole physics)."""
        return 1.0


class Head(nn.Module, ABC):
    """(B, in_dim) features → (B,) standardised prediction."""

    @abstractmethod
    def forward(self, features: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def reset_parameters(self) -> None:
        """Fresh weights (policy `reinit_head`)."""

    def load_source_layer(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Start from the backbone's source output layer, where this head can; others keep their init."""

    def stored_config(self) -> dict | None:
        """The config model.pt stores to rebuild this head (None: the run's `head` config)."""
        return None


class Descriptors(ABC):
    """Per-structure physical quantities that `PhysicsAugmented` joins to an inner backbone's features: a featurizer
    of (N, len(names)) vectors (a `CompositionSet`), standardised by the fixed `shift` and `scale` (never fitted on a
    DFT set). The constructor takes `spec` (stored in model.pt: rebuilds the descriptors without the data folder)."""

    names: tuple[str, ...]
    shift: tuple[float, ...]
    scale: tuple[float, ...]
    spec: dict
    label: str  # for the backbone's name
    gives_baseline: ClassVar[bool] = False  # `baseline` is implemented

    @abstractmethod
    def featurizer(self) -> Featurizer: ...

    def baseline(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) physical predictions of the target from the raw descriptor vectors `x`, NaN where there is none
        (everywhere unless `gives_baseline`)."""
        return torch.full((len(x),), torch.nan, dtype=x.dtype, device=x.device)
