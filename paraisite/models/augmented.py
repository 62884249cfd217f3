"""A graph backbone whose features are joined by the Debye–Grüneisen quantities of `quasiharmonic` (physics-augmented).

`PhysicsAugmented(inner)`: the inner backbone's features (e.g. M3GNet's 64) followed by the 10 quasi-harmonic
`FEATURES`, standardised by fixed constants (their mean and spread over AFLOW AGL's structures, a set no DFT test
reads); the head sees both, the stage policy trains or freezes the inner backbone as usual. Its YAML names the inner
backbone as a partial (`inner: {_target_: …, _partial_: true}`); the inner one gets the run's `weights`, and its
`spec` is stored inside this one's, so a saved model rebuilds without the data folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch

from paraisite.contracts import Backbone, FeatureSet, Featurizer
from paraisite.data.composition import CompositionSet
from paraisite.models.chgnet import WEIGHTS
from paraisite.models.quasiharmonic import FEATURES, QuasiHarmonicFeaturizer

# Mean and standard deviation of each of FEATURES over AGL's 3254 usable structures (scripts/quasiharmonic_agl.py).
AGL_MEAN = (0.7039, 1.0274, 5.834, 5.1416, 2.4464, 4.5215, 5.2262, 4.4171, 2.9407, 2.0771)
AGL_STD = (1.3157, 1.0442, 0.398, 0.4363, 0.7317, 0.6652, 1.4633, 0.5377, 0.3263, 0.6995)


@dataclass
class AugmentedBatch:
    inner: object  # the inner feature set's batch
    x: torch.Tensor  # (B, len(FEATURES)) quasi-harmonic features

    @property
    def y(self) -> torch.Tensor:
        return self.inner.y

    @property
    def fidelity(self) -> torch.Tensor | None:
        return self.inner.fidelity


@dataclass
class AugmentedSet:
    """The inner backbone's feature set and the quasi-harmonic vectors of the same records; a record is usable when
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
    """The inner featurizer and the quasi-harmonic one on the same records. The key joins the two parts' keys, so each
    part is cached in the file its own backbone uses (a dataset featurized for M3GNet or quasiharmonic is reused)."""

    inner: Featurizer
    physics: QuasiHarmonicFeaturizer
    by_composition: ClassVar[bool] = False  # the quasi-harmonic part needs structures
    separator: ClassVar[str] = "+"

    def key(self, content_hash: str, extra: str = "") -> str:
        return f"{self.inner.key(content_hash, extra)}{self.separator}{self.physics.key(content_hash, extra)}"

    def part_paths(self, path: Path) -> tuple[Path, Path]:
        """The cache files of the inner and the quasi-harmonic part of the set cached as `path` (`<label>-<key>`)."""
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


class PhysicsAugmented(Backbone):
    """`inner`'s features + the standardised quasi-harmonic features (module docstring). `inner`: a partial of the
    inner backbone's class (its YAML node with `_partial_: true`); `weights` go to it. `energy_model`: the CHGNet
    weight set of the quasi-harmonic part."""

    def __init__(self, inner: Callable[..., Backbone], energy_model: str = WEIGHTS, weights: str | None = None,
                 spec: dict | None = None):
        super().__init__()
        self.inner = inner(weights=weights, spec=None if spec is None else spec["inner"])
        energy_model = energy_model if spec is None else spec["energy_model"]
        self.spec = {"inner": self.inner.spec, "energy_model": energy_model}
        self._featurizer = AugmentedFeaturizer(self.inner.featurizer(), QuasiHarmonicFeaturizer(energy_model))
        self.register_buffer("shift", torch.tensor(AGL_MEAN, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(AGL_STD, dtype=torch.float32))
        self.name = f"{self.inner.name} + Debye–Grüneisen (CHGNet {energy_model} energies)"

    @property
    def out_dim(self) -> int:
        return self.inner.out_dim + len(FEATURES)

    def featurizer(self) -> AugmentedFeaturizer:
        return self._featurizer

    def forward(self, batch: AugmentedBatch) -> torch.Tensor:
        return torch.cat([self.inner(batch.inner), (batch.x - self.shift) / self.scale], dim=1)
