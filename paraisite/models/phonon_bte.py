"""The phonon-BTE κ of `paraisite bte` tables as descriptors of a structure: the physics as a network input.

`BTEDescriptors(tables)`: per record, by its id in the tables (a later table's row replaces an earlier), the
`FEATURES` vector — ln κ_BTE where the row is trusted (else 0) and three indicators: trusted, `imaginary_modes`
(unstable at 0 K for the potential: strongly anharmonic), `no_scattering`. Standardised by fixed constants (ln κ_BTE
about ln 10 W/mK, spread 2; the indicators as they are). The rows read are stored in the spec, so a saved model
predicts its tables' structures without the files. A record whose row names another formula is flagged (bad data); a
record without a row gets the zero vector (no κ, no indicator), with a warning that lists it: every stage featurizes
all LTC sources (AGL too) for its leakage filter, so a missing row cannot stop a run, but a model trained where every
record has a row predicts such a record without its physics: run `paraisite bte` on new structures and give the
table to `paraisite predict --bte` (`add_rows`). Relative table paths are read from the project's root.

`unstable_modes=True` (`FEATURES_UNSTABLE`): a row with imaginary modes gives its computed κ too (the stable modes'
sum, floored at `KAPPA_FLOOR`: the amorphous limit's order), and how deep its lowest mode is imaginary (THz) — a
label-free measure of how anharmonic the lattice is; the `bte_trusted` indicator still tells the two apart.
Used by `backbone=megnet_bte` and `m3gnet_bte` (`PhysicsAugmented`); the same tables give the shipped model its prior
(`paraisite/prior.py`).
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
from paraisite.errors import ConfigError
from paraisite.paths import PROJECT_ROOT
from paraisite.phonons import IMAGINARY_MODES, NO_SCATTERING
from paraisite.prior import BTERow, physical_kappa, row_of

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
FEATURES = ("ln kappa_bte", "bte_trusted", "bte_imaginary_modes", "bte_no_scattering")
FEATURES_UNSTABLE = (*FEATURES, "bte_instability_thz")
KAPPA_FLOOR = 0.1  # W/mK: below any crystal's κ at 300 K; a strongly unstable row's κ can be 10⁻³
BTE_FORMULA_MISMATCH = "bte_formula_mismatch"


def feature_names(unstable_modes: bool) -> tuple[str, ...]:
    return FEATURES_UNSTABLE if unstable_modes else FEATURES


@dataclass
class BTEFeaturizer(Featurizer):
    """Records → `FEATURES` (`FEATURES_UNSTABLE` with `unstable_modes`) from `rows` ({id: `prior.BTERow` as a
    list}, `prior.physical_kappa`'s form)."""

    rows: dict[str, list]
    unstable_modes: bool = False
    by_composition: ClassVar[bool] = False

    def key(self, content_hash: str, extra: str = "") -> str:
        mode = "|unstable_modes" if self.unstable_modes else ""
        text = f"phonon_bte|{CACHE_FORMAT}|{content_hash}|{json.dumps(self.rows, sort_keys=True)}|{extra}{mode}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def features(self, row: BTERow) -> list[float]:
        """The descriptor vector of one row (module docstring)."""
        unstable = row.why == IMAGINARY_MODES
        ln_kappa = math.log(row.kappa) if row.kappa is not None else 0.0
        x = [ln_kappa, row.kappa is not None, unstable, row.why == NO_SCATTERING]
        if not self.unstable_modes:
            return x
        if unstable and row.computed is not None:
            x[0] = math.log(max(row.computed, KAPPA_FLOOR))
        return [*x, max(0.0, -row.min_frequency) if unstable and row.min_frequency is not None else 0.0]

    def build(self, records: list[Record]) -> CompositionSet:
        x, flags, missing = np.zeros((len(records), len(feature_names(self.unstable_modes)))), [], []
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
        if missing:
            log.warning("%d of %d record(s) are in no BTE table and get no phonon-BTE input: %s%s", len(missing),
                        len(records), ", ".join(missing[:10]), ", …" if len(missing) > 10 else "")
        return CompositionSet.of_records(records, x, flags)

    save, load = staticmethod(CompositionSet.save), staticmethod(CompositionSet.load)
    concat = staticmethod(CompositionSet.concat)


def reads_bte(featurizer: Featurizer) -> bool:
    """Whether a featurizer takes the BTE rows as input (`PhysicsAugmented`'s with `BTEDescriptors`)."""
    from paraisite.models.augmented import AugmentedFeaturizer

    return isinstance(featurizer, AugmentedFeaturizer) and isinstance(featurizer.physics, BTEFeaturizer)


def add_rows(featurizer: Featurizer, rows: dict) -> bool:
    """Give a BTE-input featurizer (`reads_bte`) `rows` too (`prior.physical_kappa`'s form; they replace stored rows
    of the same id): `paraisite predict --bte` on new structures. False, and nothing done, for any other
    featurizer."""
    if not reads_bte(featurizer):
        return False
    featurizer.physics.rows = {**featurizer.physics.rows, **{k: list(v) for k, v in rows.items()}}
    return True


class BTEDescriptors(Descriptors):
    """The `FEATURES` of `tables` (`FEATURES_UNSTABLE` with `unstable_modes`; module docstring); `spec` holds the rows
    read and the mode."""

    gives_baseline = True  # κ_BTE where trusted (`baseline`)

    def __init__(self, tables: list[str] | tuple[str, ...] = (), spec: dict | None = None,
                 unstable_modes: bool = False):
        if spec is None:
            if not tables:
                raise ConfigError("backbone.physics.tables: name at least one `paraisite bte` table")
            paths = [PROJECT_ROOT / t for t in tables]  # an absolute path stays itself
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise ConfigError(f"backbone.physics.tables: no such file {missing} (relative paths are read from "
                                  f"{PROJECT_ROOT.name}/)")
            spec = {"tables": [p.name for p in paths], "unstable_modes": unstable_modes,
                    "rows": {rid: list(row) for rid, row in physical_kappa(paths).items()}}
        self.spec = spec
        self.unstable_modes = bool(spec.get("unstable_modes", False))  # a spec stored before the mode existed: off
        self.names = feature_names(self.unstable_modes)
        self.shift = (math.log(10.0), 0.0, 0.0, 0.0, 0.0)[:len(self.names)]
        self.scale = (2.0, 1.0, 1.0, 1.0, 1.0)[:len(self.names)]
        self.label = f"phonon-BTE κ ({', '.join(spec['tables'])}{', unstable modes' if self.unstable_modes else ''})"

    def featurizer(self) -> BTEFeaturizer:
        return BTEFeaturizer(self.spec["rows"], self.unstable_modes)

    def baseline(self, x: torch.Tensor) -> torch.Tensor:
        """κ_BTE (W/mK) where the row is trusted, NaN elsewhere (flagged rows, records in no table)."""
        return torch.where(x[:, 1] > 0.5, x[:, 0].exp(), torch.nan)
