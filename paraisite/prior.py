"""A physical κ (the phonon BTE of `paraisite bte`) as the prior of a model's prediction.

With p the model's prediction and b the physical κ of the same structure, the blended prediction is
    κ = exp(ln p + w·(ln b + m − ln p) + a):
m centres the physics on the model (the median of ln p − ln b over the calibration materials: no label used; a
universal potential's level is off, its order is what counts), the weight w ∈ [0, 1] and the shift a are the grid
point of least MAPE over the calibration materials. A structure without a trusted b keeps p. `Prior` is what a
bundle's route stores (`paraisite bundle --bte`); `paraisite predict --bte TABLE` applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from paraisite.errors import DataError
from paraisite.intervals import Interval, conformal
from paraisite.phonons import DEFAULT_POTENTIAL

W_GRID = np.round(np.arange(0.0, 1.001, 0.05), 2)
A_GRID = np.round(np.arange(-0.5, 0.501, 0.01), 2)
FOLDS = 5  # of the out-of-fold score
BELOW_AMORPHOUS_LIMIT = "below_amorphous_limit"  # `distrust_below`


def fit_weights(ln_pred: np.ndarray, ln_prior: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(w, a) of least MAPE of exp(ln_pred + w·(ln_prior − ln_pred) + a) over the grids (the prior already
    centred); ties go to the smaller w, then the smaller a."""
    step = W_GRID[:, None, None] * (ln_prior - ln_pred)[None, None, :] + A_GRID[None, :, None]
    mape = np.mean(np.abs(np.exp(ln_pred + step) - true) / true, axis=-1)
    i, j = np.unravel_index(np.argmin(mape), mape.shape)
    return float(W_GRID[i]), float(A_GRID[j])


def blend(pred, physical, weight: float, shift: float, centre: float):
    """exp(ln p + w·(ln b + m − ln p) + a) (module docstring)."""
    return np.exp(np.log(pred) + weight * (np.log(physical) + centre - np.log(pred)) + shift)


def folds_of(n: int) -> np.ndarray:
    """The fixed split of n materials into FOLDS folds that every out-of-fold fit here uses."""
    return np.random.default_rng(0).permutation(n) % FOLDS


@dataclass(frozen=True)
class Prior:
    """A fitted blend of a model's prediction with a physical κ (module docstring), with the interval of the
    blended predictions and their out-of-fold MAPE next to the model's own on the same calibration materials."""

    weight: float
    shift: float
    centre: float
    n_calibration: int  # materials with a trusted physical κ
    calibrated_on: str
    mape_model: float  # of the model alone, on those materials
    mape_blended: float  # out of fold: each fold's (m, w, a) fitted on the others
    interval: Interval | None = None
    potential: str = DEFAULT_POTENTIAL  # of the BTE tables it was fitted on, and reads

    def blend(self, pred, physical):
        return blend(pred, physical, self.weight, self.shift, self.centre)

    def to_json(self) -> dict:
        return {"weight": self.weight, "shift": self.shift, "centre": self.centre,
                "n_calibration": self.n_calibration, "calibrated_on": self.calibrated_on,
                "mape_model": self.mape_model, "mape_blended": self.mape_blended,
                "interval": self.interval.to_json() if self.interval else None, "potential": self.potential}

    @classmethod
    def from_json(cls, data: dict) -> Prior:
        return cls(float(data["weight"]), float(data["shift"]), float(data["centre"]), int(data["n_calibration"]),
                   str(data["calibrated_on"]), float(data["mape_model"]), float(data["mape_blended"]),
                   Interval.from_json(data["interval"]) if data.get("interval") else None,
                   str(data.get("potential", DEFAULT_POTENTIAL)))  # a prior stored before it: of the default


def fit_on(pred: np.ndarray, physical: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """(m, w, a) fitted on materials that all have a physical κ."""
    centre = float(np.median(np.log(pred) - np.log(physical)))
    return centre, *fit_weights(np.log(pred), np.log(physical) + centre, true)


def blended_out_of_fold(pred: np.ndarray, physical: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Each material's blend with (m, w, a) fitted on the other folds' materials; NaN `physical`: p kept."""
    fold, known, out = folds_of(len(pred)), np.isfinite(physical), np.array(pred, dtype=float)
    for f in range(FOLDS):
        fit = known & (fold != f)
        apply = known & (fold == f)
        if fit.any() and apply.any():
            centre, w, a = fit_on(pred[fit], physical[fit], true[fit])
            out[apply] = blend(pred[apply], physical[apply], w, a, centre)
    return out


def calibrate_prior(pred: np.ndarray, physical: np.ndarray, true: np.ndarray, level: float | None,
                    calibrated_on: str, potential: str = DEFAULT_POTENTIAL) -> Prior:
    """The prior fitted on every calibration material with a physical κ (NaN: none; of `potential`'s tables),
    scored out of fold, with the conformal interval of `level` on the out-of-fold blended predictions (None: no
    interval)."""
    known = np.isfinite(physical)
    pred, physical, true = pred[known], physical[known], true[known]
    centre, w, a = fit_on(pred, physical, true)
    oof = blended_out_of_fold(pred, physical, true)
    interval = conformal(true, oof, level, f"{calibrated_on}: out-of-fold blends") if level else None
    return Prior(w, a, centre, int(known.sum()), calibrated_on, mape(pred, true), mape(oof, true), interval,
                 potential)


def mape(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true) / true))


class BTERow(NamedTuple):
    """One structure's row of `paraisite bte` tables as priors and the BTE input read it (stored in a model's spec
    as a list; rows stored before `computed`, `min_frequency`, `volume_ratio` and `anharmonicity` existed have the
    first three, five or six)."""

    formula: str
    kappa: float | None  # W/mK, only where the row is trusted (`BTEResult.trusted`)
    why: str  # why not trusted: the row's flag; "" where trusted
    computed: float | None = None  # W/mK, the κ computed, trusted or not (None: none, or not finite)
    min_frequency: float | None = None  # THz, the lowest over the mesh (negative: imaginary modes)
    volume_ratio: float | None = None  # the potential's relaxed volume / the given structure's (None: not known)
    anharmonicity: float | None = None  # σᴬ of the potential's lattice (`paraisite.phonons`; None: not known)


def bte_tables(tables: list[str | Path]) -> dict[str, dict[str, BTERow]]:
    """{potential: {id: `BTERow`}} from `paraisite bte` tables, in the order given (of one potential, a later
    table's row replaces an earlier, unless its calculation failed: e.g. a renormalisation that failed keeps the
    0 K row)."""
    from paraisite.phonons import read_table

    out: dict[str, dict[str, BTERow]] = {}
    for path in tables:
        for rid, row in read_table(Path(path)).items():
            if row.failed and rid in out.get(row.potential, {}):
                continue
            why = "" if row.trusted else (row.flag or f"κ {row.kappa:g} not usable")
            finite = math.isfinite(row.kappa) and row.kappa > 0
            out.setdefault(row.potential, {})[rid] = BTERow(
                row.formula, row.kappa if row.trusted else None, why, row.kappa if finite else None,
                row.min_frequency if math.isfinite(row.min_frequency) else None,
                row.volume_ratio if math.isfinite(row.volume_ratio) else None,
                row.anharmonicity if math.isfinite(row.anharmonicity) else None)
    return out


def one_potential(tables: list[str | Path], potential: str | None = None) -> tuple[str, dict[str, BTERow]]:
    """(potential, {id: `BTERow`}) from `paraisite bte` tables of one potential (as `bte_tables` merges them):
    `potential` where given (default: the tables' own, else `DEFAULT_POTENTIAL`); tables of another
    potential, or of several, are refused."""
    by_potential = bte_tables(tables)
    potential = potential or next(iter(by_potential), DEFAULT_POTENTIAL)
    other = sorted(set(by_potential) - {potential})
    if other:
        raise DataError(f"BTE tables {', '.join(map(str, tables))}: rows of the potential(s) {', '.join(other)}; "
                        f"give tables of {potential} alone here")
    return potential, by_potential.get(potential, {})


def physical_kappa(tables: list[str | Path], potential: str | None = None) -> dict[str, BTERow]:
    """{id: `BTERow`} from `paraisite bte` tables of one potential (`one_potential`)."""
    return one_potential(tables, potential)[1]


def distrust_below(physical: dict[str, BTERow], limit: float) -> dict[str, BTERow]:
    """`physical` (`physical_kappa`'s form) with every trusted κ below `limit` W/mK distrusted (why:
    `BELOW_AMORPHOUS_LIMIT`): a lattice κ under the amorphous limit means phonon mean free paths shorter than the
    interatomic spacing, where the phonon gas that the BTE describes no longer exists."""
    return {rid: row._replace(kappa=None, why=BELOW_AMORPHOUS_LIMIT) if row.kappa is not None and row.kappa < limit
            else row for rid, row in physical.items()}


def row_of(physical: dict, rid: str) -> BTERow | None:
    """The row of `rid` in `physical` (`physical_kappa`'s form, or its rows as stored lists), else the row of its
    file name (a structure file given by another path than the table's), else of its stem (`mp-1000.cif` reads the
    row of a data set's `mp-1000`); None where there is none."""
    path = Path(rid)
    row = next((physical[key] for key in (rid, path.name, path.stem) if key in physical), None)
    return None if row is None else BTERow(*row)


def kappa_of(physical: dict, ids) -> np.ndarray:
    """The trusted κ of each id in `physical` (`physical_kappa`), NaN where it has none."""
    return np.array([np.nan if physical.get(i, ("", None, ""))[1] is None else physical[i][1] for i in ids],
                    dtype=float)
