"""Magpie elemental statistics: the physical-attribute baseline (Ward et al. 2016; Gupta et al. 2021).

`MagpieFeaturizer`: a formula (or a structure's composition) → for each of Magpie's 22 elemental properties, the
minimum, maximum, range, fraction-weighted mean, average deviation and mode over its elements (132 features) — what
matminer's `ElementProperty.from_preset("magpie")` computes, from matminer's own Magpie tables, vectorised over a
dataset. Elements Magpie has no complete data for (noble gases, super-heavy elements) are flagged
`element_not_in_model: X` (matminer would impute them silently).

`MagpieBackbone`: no trainable weights; its output is that vector shifted and scaled by fixed constants of the
element table (`standardize: true`, default): location statistics (min, max, mean, mode) become (value − mean over
elements) / std over elements, spreads (range, average deviation) value / std over elements. Tree models
(`random_forest`, `hist_gradient_boosting`) are unaffected by it; ridge and a network head need comparable scales.
The constants are buffers (stored in model.pt). Meant for `finetune=features`; a network stage trains the head only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from pymatgen.core import Composition, Element

from paraisite.contracts import Backbone, Featurizer
from paraisite.data.composition import CompositionSet
from paraisite.data.records import ELEMENT_NOT_IN_MODEL, Record
from paraisite.errors import ConfigError

CACHE_FORMAT = 1
SPREADS = ("range", "avg_dev")  # statistics that are differences (scaled, not shifted, by `standardize`)


def _matminer():
    try:
        import matminer
        from matminer.featurizers.composition import ElementProperty
        from matminer.utils.data import MagpieData
    except ImportError as exc:
        raise ConfigError(f"backbone magpie needs matminer ({exc}); install it with "
                          "`python -m pip install --no-deps matminer==0.10.1`") from None
    return matminer, ElementProperty, MagpieData


@lru_cache(maxsize=1)
def magpie_preset() -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(properties, statistics, matminer version) of matminer's `ElementProperty.from_preset("magpie")`."""
    matminer, ElementProperty, _ = _matminer()
    preset = ElementProperty.from_preset("magpie")
    return tuple(preset.features), tuple(preset.stats), getattr(matminer, "__version__", "unknown")


@lru_cache(maxsize=4)
def element_table(properties: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """(elements with every property known, (n_elements, n_properties) float64 values) from matminer's Magpie
    tables, without imputation."""
    _, _, MagpieData = _matminer()
    data = MagpieData(impute_nan=False).all_elemental_props
    unknown = [p for p in properties if p not in data]
    if unknown:
        raise ConfigError(f"backbone magpie: unknown Magpie properties {unknown} (matminer has: {', '.join(sorted(data))})")
    elements, rows = [], []
    for z in range(1, 119):
        symbol = Element.from_Z(z).symbol
        row = [float(data[p].get(symbol, float("nan"))) for p in properties]
        if all(np.isfinite(row)):
            elements.append(symbol)
            rows.append(row)
    return tuple(elements), np.array(rows, dtype=np.float64)


def magpie_statistics(amounts: list[dict[str, float]], index: dict[str, int], table: np.ndarray,
                      stats: tuple[str, ...]) -> np.ndarray:
    """(N, n_properties × n_stats) statistics of compositions given as {element: amount} (every element in
    `index`), in matminer's order: for each property, each statistic. Weights are the amounts (normalised), the mode
    is the smallest value among the elements of largest amount (ties by `np.isclose`), as matminer's PropertyStats."""
    n, width = len(amounts), max((len(a) for a in amounts), default=1)
    pad = len(table)  # a padding row of zeros
    idx, w = np.full((n, width), pad), np.zeros((n, width))
    for i, amount in enumerate(amounts):
        for j, (el, a) in enumerate(amount.items()):
            idx[i, j], w[i, j] = index[el], a
    mask = w > 0
    values = np.concatenate([table, np.zeros((1, table.shape[1]))])[idx]  # (N, width, P)
    weights = (w / w.sum(1, keepdims=True))[..., None]
    mean = (weights * values).sum(1)
    lowest = np.where(mask[..., None], values, np.inf).min(1)
    highest = np.where(mask[..., None], values, -np.inf).max(1)
    top = w.max(1, keepdims=True)
    modal = mask & (np.abs(w - top) <= 1e-8 + 1e-5 * np.abs(top))
    computed = {"minimum": lowest, "maximum": highest, "range": highest - lowest, "mean": mean,
                "avg_dev": (weights * np.abs(values - mean[:, None])).sum(1),
                "mode": np.where(modal[..., None], values, np.inf).min(1)}
    unknown = [s for s in stats if s not in computed]
    if unknown:
        raise ConfigError(f"backbone magpie: unknown statistics {unknown} (available: {', '.join(computed)})")
    return np.stack([computed[s] for s in stats], axis=-1).reshape(n, -1)


@dataclass
class MagpieFeaturizer(Featurizer):
    """Formula (or a structure's composition) → Magpie statistics (`CompositionSet` with x of shape (N, 132))."""

    properties: tuple[str, ...] = field(default_factory=lambda: magpie_preset()[0])
    stats: tuple[str, ...] = field(default_factory=lambda: magpie_preset()[1])
    by_composition: ClassVar[bool] = True  # reads a dataset's composition table where one exists (AGL)

    def __post_init__(self):
        self.properties, self.stats = tuple(self.properties), tuple(self.stats)

    @property
    def labels(self) -> list[str]:
        """matminer's feature labels, in column order."""
        return [f"MagpieData {s} {p}" for p in self.properties for s in self.stats]

    def key(self, content_hash: str, extra: str = "") -> str:
        elements, table = element_table(self.properties)
        digest = hashlib.sha256(table.tobytes() + ",".join(elements).encode()).hexdigest()[:16]
        text = (f"magpie|{CACHE_FORMAT}|{content_hash}|{magpie_preset()[2]}|{','.join(self.properties)}|"
                f"{','.join(self.stats)}|{digest}|{extra}")
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def features(self, formulas: list[str]) -> tuple[np.ndarray, list[str]]:
        """((N, n_features) float64, flag per formula): zeros and `element_not_in_model: X` for a formula with an
        element outside the table, or (never expected) a non-finite statistic."""
        elements, table = element_table(self.properties)
        index = {el: i for i, el in enumerate(elements)}
        parsed: dict[str, dict[str, float]] = {}
        amounts, flags = [], []
        for formula in formulas:
            if formula not in parsed:
                parsed[formula] = Composition(formula).get_el_amt_dict()
            amount = parsed[formula]
            missing = sorted(el for el in amount if el not in index)
            flags.append(f"{ELEMENT_NOT_IN_MODEL}: {' '.join(missing)}" if missing else "")
            amounts.append({} if missing else amount)
        usable = [i for i, f in enumerate(flags) if not f]
        x = np.zeros((len(formulas), len(self.properties) * len(self.stats)))
        if usable:
            x[usable] = magpie_statistics([amounts[i] for i in usable], index, table, self.stats)
        for i in np.flatnonzero(~np.isfinite(x).all(1)):
            flags[i], x[i] = f"{ELEMENT_NOT_IN_MODEL}: non-finite Magpie statistics", 0.0
        return x, flags

    def build(self, records: list[Record]) -> CompositionSet:
        x, flags = self.features([r.formula for r in records])
        return CompositionSet.of_records(records, x, flags)

    # the cache file and concatenation of every composition feature set
    save, load = staticmethod(CompositionSet.save), staticmethod(CompositionSet.load)
    concat = staticmethod(CompositionSet.concat)


class MagpieBackbone(Backbone):
    """Magpie statistics → the same, standardised by fixed element-table constants (`standardize`); no trainable
    weights. `properties`/`stats`: null for matminer's magpie preset. `weights` must be None (nothing to pre-train).
    """

    def __init__(self, properties: list[str] | None = None, stats: list[str] | None = None, standardize: bool = True,
                 weights: str | None = None, spec: dict | None = None):
        super().__init__()
        if weights:
            raise ConfigError(f"backbone magpie has no pre-trained weights (got {weights!r}); use pretrain=scratch")
        if spec is None:
            preset = magpie_preset()
            spec = {"properties": list(properties or preset[0]), "stats": list(stats or preset[1]),
                    "standardize": bool(standardize)}
        self.spec = dict(spec)
        self._featurizer = MagpieFeaturizer(tuple(spec["properties"]), tuple(spec["stats"]))
        n_stats = len(spec["stats"])
        shift, scale = torch.zeros(len(spec["properties"]), n_stats), torch.ones(len(spec["properties"]), n_stats)
        if spec["standardize"]:
            _, table = element_table(self._featurizer.properties)
            mean, std = table.mean(0), table.std(0)
            std = np.where(std > 0, std, 1.0)
            for k, s in enumerate(spec["stats"]):
                shift[:, k] = torch.as_tensor(0.0 if s in SPREADS else mean)
                scale[:, k] = torch.as_tensor(std)
        self.register_buffer("shift", shift.reshape(-1))
        self.register_buffer("scale", scale.reshape(-1))
        self.name = f"Magpie ({len(self.shift)} elemental statistics)"

    @property
    def out_dim(self) -> int:
        return len(self.shift)

    def featurizer(self) -> MagpieFeaturizer:
        return self._featurizer

    def forward(self, batch) -> torch.Tensor:
        return (batch.x - self.shift) / self.scale
