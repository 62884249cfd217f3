"""The phonon-BTE κ of `paraisite bte` tables as descriptors of a structure: the physics as a network input.

`BTEDescriptors(tables)`: per record, by its id in the tables (`prior.bte_tables`: a later table's row replaces an
earlier, unless its calculation failed), the `FEATURES` vector — ln κ_BTE where the row is trusted (else 0) and
three indicators: trusted, `imaginary_modes` (unstable at 0 K for the potential: strongly anharmonic),
`no_scattering`. Standardised by fixed constants (ln κ_BTE about ln 10 W/mK, spread 2; the indicators as they are).
The rows read are stored in the spec, so a saved model predicts its tables' structures without the files. A record
whose row names another formula is flagged (bad data); a record without a row gets the zero vector (no κ, no
indicator), with a warning that lists it: every stage featurizes all LTC sources (AGL too) for its leakage filter,
so a missing row cannot stop a run, but a model trained where every record has a row predicts such a record without
its physics: run `paraisite bte` on new structures and give the table to `paraisite predict --bte` (`add_rows`).
Relative table paths are read from the project's root.

`unstable_modes=True` (`FEATURES_UNSTABLE`): a row with imaginary modes gives its computed κ too (the stable modes'
sum, floored at `KAPPA_FLOOR`: the amorphous limit's order), and how deep its lowest mode is imaginary (THz) — a
label-free measure of how anharmonic the lattice is; the `bte_trusted` indicator still tells the two apart.
`amorphous_limit` (W/mK; 0: off) distrusts a trusted κ below it (`prior.distrust_below`): the row reads as
untrusted, in the tables and in rows given later (`add_rows`).
`volume_ratio=True` appends `ln volume_ratio`: the log of the potential's relaxed volume over the given structure's
(0 where the row has none), a label-free measure of how much the potential expands, and so softens, the lattice.
Used by `backbone=megnet_bte` and `m3gnet_bte` (`PhysicsAugmented`); the same tables give the shipped model its prior
(`paraisite/prior.py`). The tables are of one potential (their rows' `potential`), kept in the spec (a spec stored
before it: `DEFAULT_POTENTIAL`): a model reads that potential's rows alone, so experts of several potentials can
share a bundle's route and `paraisite predict --bte`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from paraisite.contracts import Descriptors, Featurizer
from paraisite.data.composition import CompositionSet
from paraisite.data.records import Record, parse_formula
from paraisite.errors import ConfigError, DataError
from paraisite.paths import PROJECT_ROOT
from paraisite.phonons import DEFAULT_POTENTIAL, IMAGINARY_MODES, NO_SCATTERING
from paraisite.prior import BTERow, distrust_below, one_potential, row_of
from paraisite.settings import check_value

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
FEATURES = ("ln kappa_bte", "bte_trusted", "bte_imaginary_modes", "bte_no_scattering")
FEATURES_UNSTABLE = (*FEATURES, "bte_instability_thz")
VOLUME_FEATURE = "ln volume_ratio"
SHIFT_SCALE = {"ln kappa_bte": (math.log(10.0), 2.0), VOLUME_FEATURE: (0.03, 0.02)}  # the rest: (0, 1)
KAPPA_FLOOR = 0.1  # W/mK: below any crystal's κ at 300 K; a strongly unstable row's κ can be 10⁻³
BTE_FORMULA_MISMATCH = "bte_formula_mismatch"


def listed(ids: list[str]) -> str:
    """The first ten ids, and "…" for the rest."""
    return ", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")


def feature_names(unstable_modes: bool, volume_ratio: bool = False) -> tuple[str, ...]:
    return (*(FEATURES_UNSTABLE if unstable_modes else FEATURES), *((VOLUME_FEATURE,) if volume_ratio else ()))


@dataclass
class BTEFeaturizer(Featurizer):
    """Records → `feature_names(unstable_modes, volume_ratio)` from `rows` ({id: `prior.BTERow` as a list},
    `prior.physical_kappa`'s form) of the `potential`."""

    rows: dict[str, list]
    unstable_modes: bool = False
    volume_ratio: bool = False
    amorphous_limit: float = 0.0  # W/mK: applied to rows given later (`add_rows`); the stored rows have it applied
    potential: str = DEFAULT_POTENTIAL  # whose rows it reads (`add_rows`)
    by_composition: ClassVar[bool] = False

    def key(self, content_hash: str, extra: str = "") -> str:
        mode = ("|unstable_modes" if self.unstable_modes else "") + ("|volume_ratio" if self.volume_ratio else "")
        text = f"phonon_bte|{CACHE_FORMAT}|{content_hash}|{json.dumps(self.rows, sort_keys=True)}|{extra}{mode}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def features(self, row: BTERow) -> list[float]:
        """The descriptor vector of one row (module docstring)."""
        unstable = row.why == IMAGINARY_MODES
        ln_kappa = math.log(row.kappa) if row.kappa is not None else 0.0
        x = [ln_kappa, row.kappa is not None, unstable, row.why == NO_SCATTERING]
        if self.unstable_modes:
            if unstable and row.computed is not None:
                x[0] = math.log(max(row.computed, KAPPA_FLOOR))
            x.append(max(0.0, -row.min_frequency) if unstable and row.min_frequency is not None else 0.0)
        if self.volume_ratio:
            x.append(math.log(row.volume_ratio) if row.volume_ratio is not None else 0.0)
        return x

    def build(self, records: list[Record]) -> CompositionSet:
        x = np.zeros((len(records), len(feature_names(self.unstable_modes, self.volume_ratio))))
        flags, missing, no_ratio = [], [], []
        for i, rec in enumerate(records):
            row = row_of(self.rows, rec.id)
            if row is None:
                missing.append(rec.id)
                flags.append("")
                continue
            if parse_formula(row.formula) != parse_formula(rec.formula):
                flags.append(f"{BTE_FORMULA_MISMATCH}: the BTE row of {rec.id!r} is {row.formula}, not {rec.formula}")
                continue
            x[i] = self.features(row)
            flags.append("")
            if self.volume_ratio and row.volume_ratio is None:
                no_ratio.append(rec.id)
        if missing:
            log.warning("%d of %d record(s) are in no BTE table and get no phonon-BTE input: %s", len(missing),
                        len(records), listed(missing))
        if no_ratio:
            log.warning("%d of %d record(s) have a BTE row without a volume ratio and read 1 (fill it with `paraisite "
                        "bte … --fill volume_ratio`): %s", len(no_ratio), len(records), listed(no_ratio))
        return CompositionSet.of_records(records, x, flags)

    save, load = staticmethod(CompositionSet.save), staticmethod(CompositionSet.load)
    concat = staticmethod(CompositionSet.concat)


def bte_part(featurizer: Featurizer) -> BTEFeaturizer | None:
    """The featurizer's BTE part (`PhysicsAugmented`'s with `BTEDescriptors`, alone or joined with more), or None."""
    from paraisite.models.augmented import AugmentedFeaturizer, JoinedFeaturizer

    if not isinstance(featurizer, AugmentedFeaturizer):
        return None
    parts = featurizer.physics.parts if isinstance(featurizer.physics, JoinedFeaturizer) else [featurizer.physics]
    return next((part for part in parts if isinstance(part, BTEFeaturizer)), None)


def reads_bte(featurizer: Featurizer) -> bool:
    """Whether a featurizer takes the BTE rows as input (`bte_part`)."""
    return bte_part(featurizer) is not None


def bte_potential(featurizer: Featurizer) -> str | None:
    """The potential whose BTE rows a featurizer reads (`bte_part`), None for one that reads none."""
    part = bte_part(featurizer)
    return None if part is None else part.potential


def add_rows(featurizer: Featurizer, tables: dict[str, dict]) -> bool:
    """Give a BTE-input featurizer (`reads_bte`) the rows of its potential in `tables` too (`prior.bte_tables`'
    form; they replace stored rows of the same id; the featurizer's `amorphous_limit` applies): `paraisite predict
    --bte` on new structures. False, and nothing done, for any other featurizer."""
    part = bte_part(featurizer)
    if part is None:
        return False
    rows = distrust_below(tables.get(part.potential, {}), part.amorphous_limit)
    part.rows = {**part.rows, **{k: list(v) for k, v in rows.items()}}
    return True


class BTEDescriptors(Descriptors):
    """The `FEATURES` of `tables` (`FEATURES_UNSTABLE` with `unstable_modes`; module docstring); `spec` holds the rows
    read and the mode."""

    gives_baseline = True  # κ_BTE where trusted (`baseline`)

    def __init__(self, tables: list[str] | tuple[str, ...] = (), spec: dict | None = None,
                 unstable_modes: bool = False, volume_ratio: bool = False, amorphous_limit: float = 0.0):
        if spec is None:
            if not tables:
                raise ConfigError("backbone.physics.tables: name at least one `paraisite bte` table")
            paths = [PROJECT_ROOT / t for t in tables]  # an absolute path stays itself
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise ConfigError(f"backbone.physics.tables: no such file {missing} (relative paths are read from "
                                  f"{PROJECT_ROOT.name}/)")
            amorphous_limit = check_value("amorphous_limit", amorphous_limit, float, {"low": 0.0}, False,
                                          "backbone.physics (W/mK)")
            try:
                potential, rows = one_potential(paths)
            except DataError as exc:
                raise ConfigError(f"backbone.physics.tables: {exc}") from None
            rows = distrust_below(rows, amorphous_limit)
            spec = {"tables": [p.name for p in paths], "unstable_modes": unstable_modes, "volume_ratio": volume_ratio,
                    "amorphous_limit": amorphous_limit, "potential": potential,
                    "rows": {rid: list(row) for rid, row in rows.items()}}
            if volume_ratio and not any(BTERow(*row).volume_ratio for row in spec["rows"].values()):
                raise ConfigError(f"backbone.physics.volume_ratio: no row of {tables} has one (fill the column with "
                                  "`paraisite bte DATA --output TABLE --fill volume_ratio`)")
        self.spec = spec
        self.unstable_modes = bool(spec.get("unstable_modes", False))  # a spec stored before a mode existed: off
        self.volume_ratio = bool(spec.get("volume_ratio", False))
        self.amorphous_limit = float(spec.get("amorphous_limit", 0.0))
        self.potential = str(spec.get("potential", DEFAULT_POTENTIAL))
        self.names = feature_names(self.unstable_modes, self.volume_ratio)
        self.shift, self.scale = zip(*(SHIFT_SCALE.get(name, (0.0, 1.0)) for name in self.names))
        modes = (", unstable modes" if self.unstable_modes else "") + (", volume ratio" if self.volume_ratio else "") \
            + (f", none below {self.amorphous_limit:g} W/mK" if self.amorphous_limit else "")
        self.label = f"phonon-BTE κ of {self.potential} ({', '.join(spec['tables'])}{modes})"

    def featurizer(self) -> BTEFeaturizer:
        return BTEFeaturizer(self.spec["rows"], self.unstable_modes, self.volume_ratio, self.amorphous_limit,
                             self.potential)

    def baseline(self, x: torch.Tensor) -> torch.Tensor:
        """κ_BTE (W/mK) where the row is trusted, NaN elsewhere (flagged rows, records in no table)."""
        return torch.where(x[:, 1] > 0.5, x[:, 0].exp(), torch.nan)
