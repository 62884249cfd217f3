"""A graph backbone whose features are joined by physical descriptors of the same structure (physics-augmented).

`PhysicsAugmented(inner, physics)`: the inner backbone's features (e.g. M3GNet's 64) followed by the `Descriptors`
`physics` (the Debye–Grüneisen quantities of `quasiharmonic`, the phonon-BTE κ of a table), standardised by their
fixed constants; the head sees both, the stage policy trains or freezes the inner backbone as usual. Its YAML names
the inner backbone and the descriptors as partials (`{_target_: …, _partial_: true}`); the inner one gets the run's
`weights`, and both `spec`s are stored inside this one's, so a saved model rebuilds without the data folder.
`extra_physics` (optional, another `Descriptors` partial, e.g. the electron count of `electron_count`) appends its
columns after `physics`'s (`JoinedFeaturizer`); the baseline stays `physics`'s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from torch import nn

from paraisite.contracts import Backbone, Descriptors, FeatureSet, Featurizer
from paraisite.data.composition import CompositionSet
from paraisite.errors import ConfigError


@dataclass
class AugmentedBatch:
    inner: object  # the inner feature set's batch
    x: torch.Tensor  # (B, len(names)) physical descriptors

    @property
    def y(self) -> torch.Tensor:
        return self.inner.y

    @property
    def fidelity(self) -> torch.Tensor | None:
        return self.inner.fidelity


@dataclass
class AugmentedSet:
    """The inner backbone's feature set and the descriptor vectors of the same records; a record is usable when
    both are."""

    inner: FeatureSet
    physics: CompositionSet

    @property
    def ids(self) -> list[str]:
        return self.inner.ids

    @property
    def formulas(self) -> list[str]:
        return self.inner.formulas

    @property
    def target(self) -> torch.Tensor:
        return self.inner.target

    @property
    def flags(self) -> list[str]:
        return [a or b for a, b in zip(self.inner.flags, self.physics.flags)]

    def __len__(self) -> int:
        return len(self.inner)

    def collate(self, indices) -> AugmentedBatch:
        return AugmentedBatch(self.inner.collate(indices), self.physics.x[torch.as_tensor(indices, dtype=torch.long)])


@dataclass
class AugmentedFeaturizer(Featurizer):
    """The inner featurizer and the descriptors' one on the same records. The key joins the two parts' keys, so each
    part is cached in the file its own backbone uses (a dataset featurized for M3GNet or quasiharmonic is reused)."""

    inner: Featurizer
    physics: Featurizer  # of CompositionSets
    by_composition: ClassVar[bool] = False  # descriptors of structures
    separator: ClassVar[str] = "+"

    def key(self, content_hash: str, extra: str = "") -> str:
        return f"{self.inner.key(content_hash, extra)}{self.separator}{self.physics.key(content_hash, extra)}"

    def part_paths(self, path: Path) -> tuple[Path, Path]:
        """The cache files of the inner and the descriptors' part of the set cached as `path` (`<label>-<key>`)."""
        label, key = path.stem.rsplit("-", 1)
        inner, physics = key.split(self.separator)
        return path.with_name(f"{label}-{inner}{path.suffix}"), path.with_name(f"{label}-{physics}{path.suffix}")

    def build(self, records: list) -> AugmentedSet:
        return AugmentedSet(self.inner.build(records), self.physics.build(records))

    def save(self, data: AugmentedSet, path: Path) -> None:
        inner, physics = self.part_paths(path)
        self.physics.save(data.physics, physics)
        self.inner.save(data.inner, inner)

    def load(self, path: Path) -> AugmentedSet | None:
        inner_path, physics_path = self.part_paths(path)
        physics = self.physics.load(physics_path)
        inner = None if physics is None else self.inner.load(inner_path)
        return None if inner is None else AugmentedSet(inner, physics)

    def concat(self, sets: list[AugmentedSet]) -> AugmentedSet:
        return AugmentedSet(self.inner.concat([s.inner for s in sets]), self.physics.concat([s.physics for s in sets]))


@dataclass
class JoinedFeaturizer(Featurizer):
    """Featurizers of `CompositionSet`s side by side: their columns in order; a record's flag is the first part's
    that flags it."""

    parts: list[Featurizer]
    by_composition: ClassVar[bool] = False

    def key(self, content_hash: str, extra: str = "") -> str:
        text = "|".join(part.key(content_hash, extra) for part in self.parts)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def build(self, records: list) -> CompositionSet:
        sets = [part.build(records) for part in self.parts]
        flags = [next((f for f in fs if f), "") for fs in zip(*(s.flags for s in sets))]
        return CompositionSet.of_records(records, torch.cat([s.x for s in sets], dim=1).numpy(), flags)

    save, load = staticmethod(CompositionSet.save), staticmethod(CompositionSet.load)
    concat = staticmethod(CompositionSet.concat)


class PhysicsAugmented(Backbone):
    """`inner`'s features + the standardised descriptors (module docstring). `inner`, `physics`: partials of the
    inner backbone's class and of the `Descriptors` (YAML nodes with `_partial_: true`); `weights` go to `inner`.
    `learn_residual`: the descriptors' physical prediction is the model's baseline and the head learns its
    correction (`Backbone.baseline`; where a record has none, the head predicts the target alone). The standardised
    baseline enters with `residual_weight` (1: the whole physics), a parameter trained with the backbone (its lr
    and freezing) when `train_residual_weight`. `extra_physics`: a partial of more `Descriptors`, joined after
    `physics`'s (module docstring)."""

    def __init__(self, inner: Callable[..., Backbone], physics: Callable[..., Descriptors], weights: str | None = None,
                 spec: dict | None = None, learn_residual: bool = False, residual_weight: float = 1.0,
                 train_residual_weight: bool = False, extra_physics: Callable[..., Descriptors] | None = None):
        super().__init__()
        if (train_residual_weight or residual_weight != 1.0) and not learn_residual:
            key = "train_residual_weight" if train_residual_weight else "residual_weight"
            raise ConfigError(f"backbone.{key}: sets the weight of the physical baseline, which only "
                              "backbone.learn_residual=true has; set it too")
        self.inner = inner(weights=weights, spec=None if spec is None else spec["inner"])
        self.physics = physics(spec=None if spec is None else spec["physics"])
        if learn_residual and not self.physics.gives_baseline:
            raise ConfigError(f"backbone.learn_residual: {type(self.physics).__name__} gives no physical prediction "
                              "to correct; leave it false")
        self.learn_residual = learn_residual
        self.residual_weight = nn.Parameter(torch.tensor(float(residual_weight))) if train_residual_weight \
            else float(residual_weight)
        self.extra_physics = None if extra_physics is None else extra_physics(spec=None if spec is None
                                                                              else spec["extra_physics"])
        parts = [self.physics] if self.extra_physics is None else [self.physics, self.extra_physics]
        self.spec = {"inner": self.inner.spec, "physics": self.physics.spec,
                     **({} if self.extra_physics is None else {"extra_physics": self.extra_physics.spec})}
        physics_featurizer = parts[0].featurizer() if len(parts) == 1 else JoinedFeaturizer([p.featurizer()
                                                                                             for p in parts])
        self._featurizer = AugmentedFeaturizer(self.inner.featurizer(), physics_featurizer)
        self.register_buffer("shift", torch.tensor([v for p in parts for v in p.shift], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor([v for p in parts for v in p.scale], dtype=torch.float32))
        self.n_descriptors = sum(len(p.names) for p in parts)
        self.name = " + ".join([self.inner.name, *(p.label for p in parts)])

    @property
    def out_dim(self) -> int:
        return self.inner.out_dim + self.n_descriptors

    def featurizer(self) -> AugmentedFeaturizer:
        return self._featurizer

    def forward(self, batch: AugmentedBatch) -> torch.Tensor:
        return torch.cat([self.inner(batch.inner), (batch.x - self.shift) / self.scale], dim=1)

    def baseline(self, batch: AugmentedBatch) -> torch.Tensor | None:
        return self.physics.baseline(batch.x[:, :len(self.physics.names)]) if self.learn_residual else None

    def baseline_weight(self) -> torch.Tensor | float:
        return self.residual_weight
