"""κ from a universal potential by the phonon Boltzmann transport equation: no κ data, only the potential's forces.

For each structure: the conventional standard cell, relaxed by the potential with its symmetry kept (cell and free
positions, BFGS to `fmax`); the smallest diagonal supercell of it at least `min_length` Å long and `min_multiple`
cells in each direction; phono3py's finite displacements (`displacement` Å; pairs within `cutoff_pair_distance` Å)
and the potential's forces on them; second- and third-order force constants from the same supercell, symmetrised
(without the symmetrisation the acoustic sum rules break and κ collapses: MgO 3 instead of 35 W/mK); then the
linearised BTE in the relaxation-time approximation on a `mesh`³ q-point mesh (tetrahedron method) at `temperature`
K, without isotope or boundary scattering and without the non-analytic (LO–TO) correction (a potential has no Born
charges). κ is the mean of the diagonal; a structure with imaginary modes on the mesh (below −0.1 THz) is flagged,
its κ kept (the unstable modes are left out of the sum, so it is unreliable); one whose κ is unbounded or above
`MAX_KAPPA` (modes that almost no three-phonon process scatters on the mesh, e.g. BAs with its acoustic–optical
gap) is flagged `no_scattering`.

`renormalise` (an option): a structure with imaginary modes at 0 K gets self-consistent harmonic force constants at
`temperature` instead (finite-temperature phonons, the effective harmonic fit of the stochastic self-consistent
methods): from the 0 K ones, `renormalise` times: `snapshots` ± pairs of supercells displaced as the canonical
ensemble of the current harmonic phonons (phonopy; an imaginary mode by its |ω|), the potential's forces, second-order
force constants fitted to them by least squares (symfc), mixed half-and-half with the current ones; the mean of the
last three fits gives the phonons of the BTE, with the 0 K third-order constants. A row still below −0.1 THz keeps
the flag. The sampling is seeded per structure (its id) and iteration.

A structure whose calculation fails (the relaxation, the potential, phono3py or phonopy's numerical checks) is
written without κ, flagged `failed: <error>`, and the run goes on; readers merging tables keep an earlier row of it
(`prior.bte_tables`: a renormalisation that failed leaves the 0 K row).

Each row also records two label-free measures of the potential's lattice:
- `volume_ratio`, the potential's relaxed cell volume over the given structure's: how far the potential's lattice is
  from the reference calculation's (universal potentials expand and soften lattices);
- `anharmonicity`, σᴬ at `temperature` (Knoop et al., Phys. Rev. Materials 4, 083809 (2020)): over `snapshots` ±
  pairs of supercells displaced as the (quantum) canonical ensemble of the harmonic phonons the row's κ was computed
  with (phonopy's sampling, as in `renormalise`; the self-consistent phonons of a renormalised row),
  σᴬ = √(Σ (F − F⁽²⁾)² / Σ F²), F the potential's forces and F⁽²⁾ = −Φ·u the harmonic ones: the share of the force
  that the harmonic lattice, and so the three-phonon BTE built on it, misses (it grows with the temperature; fcc Cu
  with EMT at 300 K 0.2). Sampled with the seed of the structure's id.
`fill_table` adds either to a table written before its column existed (a relaxation alone for the volume ratio;
relaxation, harmonic force constants and the samples for σᴬ).

`kappa_table` runs a list of records into a CSV, one row per record as it finishes, and skips the ids the file holds:
a long run is resumed by running it again. The calculator is any ASE calculator (`sevennet_calculator` for the
SevenNet potentials of the sevenn wheel); each row records the name of its `potential`, one per table (a table
written before the column reads `DEFAULT_POTENTIAL`, and takes the potential it is resumed with).
"""

from __future__ import annotations

import csv
import math
import os
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from paraisite.errors import DataError

if TYPE_CHECKING:
    from paraisite.data.records import Record

IMAGINARY_THZ = -0.1
IMAGINARY_MODES = "imaginary_modes"
NO_SCATTERING = "no_scattering"  # modes barely scattered on the mesh: κ unbounded (e.g. BAs) or above MAX_KAPPA
MAX_KAPPA = 5000.0  # W/mK: above any known crystal's (diamond ~2000–3000)
DEFAULT_POTENTIAL = "7net-0"  # `paraisite bte`'s potential unless told otherwise
FAILURES = (RuntimeError, ValueError, ArithmeticError, np.linalg.LinAlgError,  # one structure's, not the run's
            AssertionError)  # phonopy checks its numerics by assert (e.g. a dynamical matrix's conversion)
FAILED = "failed"  # the flag's first word of a structure whose calculation failed


@dataclass(frozen=True)
class BTESettings:
    displacement: float = 0.03  # Å
    min_length: float = 7.0  # Å: the supercell's shortest multiple of the conventional cell's edges …
    min_multiple: int = 2  # … and at least this many of each (a 7.1 Å rock-salt cell alone gives nonsense)
    mesh: int = 11
    temperature: float = 300.0  # K
    fmax: float = 1e-4  # eV/Å, relaxation
    max_steps: int = 300
    cutoff_pair_distance: float | None = 5.0  # Å; None: every displacement pair
    renormalise: int = 0  # self-consistent iterations for a structure unstable at 0 K (module docstring); 0: none
    snapshots: int = 8  # ± pairs of thermally displaced supercells per iteration


@dataclass(frozen=True)
class BTEResult:
    """One structure's BTE κ (W/mK) and how it was obtained; `flag` names why κ is missing or unreliable."""

    id: str
    formula: str
    kappa: float
    kappa_xx: float
    kappa_yy: float
    kappa_zz: float
    min_frequency: float  # THz, over the mesh; negative: imaginary
    supercell: str  # the diagonal multiples of the conventional cell, e.g. "2x2x2"
    atoms: int  # in the supercell
    displacements: int  # supercells whose forces were computed
    seconds: float
    flag: str = ""
    volume_ratio: float = float("nan")  # the potential's relaxed cell volume / the given structure's (NaN: not known)
    potential: str = DEFAULT_POTENTIAL  # whose forces (`paraisite bte --potential`)
    anharmonicity: float = float("nan")  # σᴬ at the table's temperature (module docstring; NaN: not known)

    @property
    def trusted(self) -> bool:
        """A κ to use: computed, unflagged, finite, positive and below MAX_KAPPA."""
        return not self.flag and math.isfinite(self.kappa) and 0 < self.kappa <= MAX_KAPPA

    @property
    def failed(self) -> bool:
        """Its calculation failed (the flag says how): the row tells nothing of the structure."""
        return self.flag.startswith(f"{FAILED}:")


COLUMNS = tuple(f.name for f in fields(BTEResult))
LEGACY_COLUMNS = (COLUMNS[:-3], COLUMNS[:-2], COLUMNS[:-1])  # tables written before `volume_ratio`, before
# `potential`, before `anharmonicity`: read with their defaults, upgraded when appended to
FILLABLE = ("volume_ratio", "anharmonicity")  # the columns `fill_table` computes for a table's rows


def supercell_multiples(lengths, min_length: float, min_multiple: int = 2) -> tuple[int, ...]:
    """The smallest multiple of each cell edge that is at least `min_length` Å long and `min_multiple` cells."""
    return tuple(max(min_multiple, math.ceil(min_length / float(a) - 1e-9)) for a in lengths)


def relaxed(structure, calculator, settings: BTESettings):
    """(the conventional standard cell as ASE atoms relaxed (cell and positions) with its symmetry kept, its volume
    over the unrelaxed one's)."""
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    atoms = AseAtomsAdaptor.get_atoms(SpacegroupAnalyzer(structure).get_conventional_standard_structure())
    given = atoms.get_volume()
    atoms.calc = calculator
    atoms.set_constraint(FixSymmetry(atoms))
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=settings.fmax, steps=settings.max_steps)
    atoms.set_constraint()
    return atoms, float(atoms.get_volume() / given)


def kappa_bte(rec: Record, calculator, settings: BTESettings = BTESettings()) -> BTEResult:
    """The BTE κ of one record's structure with `calculator`'s forces (module docstring)."""
    from phono3py import Phono3py

    from paraisite.data.graphs import NO_STRUCTURE

    start = time.perf_counter()
    if rec.structure is None:
        return missing(rec, NO_STRUCTURE)
    atoms, volume_ratio = relaxed(rec.structure, calculator, settings)
    unit, multiples = phonon_cell(atoms, settings)
    with warnings.catch_warnings():  # phonopy 4 notes that "auto" was not v3's default
        warnings.simplefilter("ignore", UserWarning)
        ph3 = Phono3py(unit, supercell_matrix=np.diag(multiples), primitive_matrix="auto", log_level=0)
    ph3.generate_displacements(distance=settings.displacement, cutoff_pair_distance=settings.cutoff_pair_distance)
    n_atoms = len(ph3.supercell)
    forces, computed = np.zeros((len(ph3.supercells_with_displacements), n_atoms, 3)), 0
    for i, cell in enumerate(ph3.supercells_with_displacements):
        if cell is None:  # a pair beyond the cutoff: its forces are not needed
            continue
        forces[i] = forces_on(cell, calculator)
        computed += 1
    ph3.forces = forces - forces.mean(axis=1, keepdims=True)  # no net force: the potential's drift removed
    ph3.produce_fc3(symmetrize_fc3r=True)
    ph3.fc2 = bte_fc2(unit, multiples, ph3.fc2, calculator, settings, seed_of(rec))
    try:
        sigma = anharmonicity(unit, multiples, ph3.fc2, calculator, settings, seed_of(rec))
    except FAILURES:  # a diagnostic: its failure must not cost the row its κ (`fill_table` tries again)
        sigma = float("nan")
    ph3.mesh_numbers = [settings.mesh] * 3
    ph3.init_phph_interaction()
    ph3.run_thermal_conductivity(temperatures=[settings.temperature])
    conductivity = ph3.thermal_conductivity
    diagonal = [float(v) for v in np.asarray(conductivity.kappa)[0, 0, :3]]
    lowest = float(np.min(conductivity.frequencies))
    kappa = float(np.mean(diagonal))
    flag = IMAGINARY_MODES if lowest < IMAGINARY_THZ else "" if kappa <= MAX_KAPPA else NO_SCATTERING
    return BTEResult(rec.id, rec.formula, kappa, *diagonal, lowest, "x".join(map(str, multiples)), n_atoms, computed,
                     round(time.perf_counter() - start, 1), flag, volume_ratio, anharmonicity=sigma)


def seed_of(rec: Record) -> int:
    """The seed of a structure's thermal samples (renormalisation, σᴬ): its id's."""
    return zlib.crc32(rec.id.encode())


def phonon_cell(atoms, settings: BTESettings):
    """(phonopy's unit cell, the supercell's diagonal multiples) of a relaxed ASE cell."""
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.array(atoms.cell),
                        scaled_positions=atoms.get_scaled_positions())
    return unit, supercell_multiples(atoms.cell.lengths(), settings.min_length, settings.min_multiple)


def drift_free_forces(cells, calculator) -> np.ndarray:
    """The calculator's forces on each phonopy supercell, each with its mean (the potential's drift) removed."""
    forces = np.asarray([forces_on(cell, calculator) for cell in cells])
    return forces - forces.mean(axis=1, keepdims=True)


def thermal_forces(ph, calculator, settings: BTESettings, seed: int) -> np.ndarray:
    """`settings.snapshots` ± pairs of supercells displaced as the canonical ensemble at `settings.temperature` of
    `ph`'s force constants (set on `ph`, seeded by `seed`), and their drift-free forces."""
    ph.generate_displacements(number_of_snapshots=settings.snapshots, temperature=settings.temperature,
                              is_plusminus=True, random_seed=seed % 2**32)
    return drift_free_forces(ph.supercells_with_displacements, calculator)


def forces_on(cell, calculator) -> np.ndarray:
    """The calculator's forces (eV/Å) on a phonopy supercell."""
    from ase import Atoms

    atoms = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
    atoms.calc = calculator
    return atoms.get_forces()


def harmonic(unit, multiples, fc2=None):
    """Phonopy on `unit` repeated `multiples` times, with second-order force constants `fc2` if given."""
    from phonopy import Phonopy

    with warnings.catch_warnings():  # as in kappa_bte
        warnings.simplefilter("ignore", UserWarning)
        ph = Phonopy(unit, supercell_matrix=np.diag(multiples), primitive_matrix="auto", log_level=0)
    if fc2 is not None:
        ph.force_constants = fc2
    return ph


def mesh_frequencies(unit, multiples, fc2, mesh: int) -> np.ndarray:
    """The harmonic frequencies (THz) of `fc2` on a `mesh`³ q-point mesh."""
    ph = harmonic(unit, multiples, fc2)
    ph.run_mesh([mesh] * 3)
    return ph.mesh.frequencies


def harmonic_fc2(unit, multiples, calculator, settings: BTESettings) -> np.ndarray:
    """Symmetrised second-order force constants of the supercell from the calculator's forces on phonopy's
    displacements (`settings.displacement` Å): the harmonic part of `kappa_bte` without its third order."""
    ph = harmonic(unit, multiples)
    ph.generate_displacements(distance=settings.displacement)
    ph.forces = drift_free_forces(ph.supercells_with_displacements, calculator)
    ph.produce_force_constants(calculate_full_force_constants=True, show_drift=False)
    ph.symmetrize_force_constants(show_drift=False)
    return ph.force_constants


def full_of(ph, fc2: np.ndarray) -> np.ndarray:
    """`fc2` as the full supercell × supercell array (phono3py may give the compact primitive × supercell one)."""
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    return compact_fc_to_full_fc(ph.primitive, fc2) if fc2.shape[0] != fc2.shape[1] else fc2


def anharmonicity(unit, multiples, fc2, calculator, settings: BTESettings, seed: int) -> float:
    """σᴬ at `settings.temperature` of the harmonic force constants `fc2` (module docstring), sampled with `seed`."""
    ph = harmonic(unit, multiples)
    full = full_of(ph, fc2)
    ph.force_constants = full
    forces = thermal_forces(ph, calculator, settings, seed)
    harmonic_forces = -np.einsum("ijab,sjb->sia", full, ph.dataset["displacements"])
    return float(np.sqrt(((forces - harmonic_forces) ** 2).sum() / (forces ** 2).sum()))


def bte_fc2(unit, multiples, fc2, calculator, settings: BTESettings, seed: int) -> np.ndarray:
    """The harmonic force constants the BTE uses: the 0 K `fc2`, or where `settings.renormalise` and they have
    imaginary modes on the mesh, the self-consistent ones at the temperature (`renormalised_fc2`)."""
    if settings.renormalise and mesh_frequencies(unit, multiples, fc2, settings.mesh).min() < IMAGINARY_THZ:
        return renormalised_fc2(unit, multiples, fc2, calculator, settings, seed)
    return fc2


def renormalised_fc2(unit, multiples, fc2, calculator, settings: BTESettings, seed: int) -> np.ndarray:
    """Self-consistent harmonic force constants at `settings.temperature` from the 0 K ones (module docstring);
    iteration i samples with `seed` + i."""
    from phonopy.harmonic.force_constants import full_fc_to_compact_fc

    ph, fits = harmonic(unit, multiples), []
    compact = fc2.shape[0] != fc2.shape[1]
    ph.force_constants = full_of(ph, fc2)
    for iteration in range(settings.renormalise):
        current = ph.force_constants
        ph.forces = thermal_forces(ph, calculator, settings, seed + iteration)
        ph.produce_force_constants(fc_calculator="symfc", calculate_full_force_constants=True, show_drift=False)
        fits.append(ph.force_constants)
        ph.force_constants = 0.5 * (current + fits[-1])
    fc2 = np.mean(fits[-3:], axis=0)
    return full_fc_to_compact_fc(ph.primitive, fc2) if compact else fc2


def missing(rec: Record, flag: str) -> BTEResult:
    nan = float("nan")
    return BTEResult(rec.id, rec.formula, nan, nan, nan, nan, nan, "", 0, 0, 0.0, flag)


def read_table(path: Path) -> dict[str, BTEResult]:
    """The rows of a κ table written by `kappa_table`, by id (a table written before `volume_ratio` or `potential`
    reads NaN, `DEFAULT_POTENTIAL` there); an unflagged row above `MAX_KAPPA` (written before that rule) is flagged
    `no_scattering`, as the rule flags it now."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) not in (COLUMNS, *LEGACY_COLUMNS):
            raise DataError(f"{path}: not a BTE κ table (columns {reader.fieldnames}, expected {list(COLUMNS)})")
        types = {f.name: f.type for f in fields(BTEResult)}
        cast = {"float": float, "int": int, "str": str}
        rows = {}
        for line, row in enumerate(reader, start=2):
            try:
                if None in row.values():
                    raise ValueError(f"{sum(v is None for v in row.values())} field(s) missing")
                result = BTEResult(**{k: cast[types[k]](v) for k, v in row.items()})
            except (TypeError, ValueError) as exc:
                raise DataError(f"{path}, line {line} ({row.get('id')}): unreadable row ({exc})") from None
            rows[row["id"]] = replace(result, flag=NO_SCATTERING) if not result.flag and result.kappa > MAX_KAPPA \
                else result
        return rows


def read_header(path: Path) -> tuple[str, ...]:
    with open(path, newline="") as f:
        return tuple(next(csv.reader(f), ()))


def write_table(path: Path, rows) -> None:
    """`rows` (`BTEResult`s) as a κ table, replacing `path` atomically (a failed write leaves the old file)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(list(asdict(row).values()) for row in rows)
    os.replace(tmp, path)


def rows_of_potential(path: Path, potential: str) -> dict[str, BTEResult]:
    """The rows of the table `path` to resume with `potential`: a table written before the `potential` column is
    taken as of it (one potential per table); a table of another potential is refused."""
    rows = read_table(path)
    if "potential" not in read_header(path):
        return {rid: replace(row, potential=potential) for rid, row in rows.items()}
    other = sorted({row.potential for row in rows.values()} - {potential})
    if other:
        raise DataError(f"{path}: a table of the potential {', '.join(other)}; its rows are not resumed with "
                        f"{potential} (one potential per table: give another --output)")
    return rows


def fill_table(records: list[Record], calculator, path: Path, column: str, settings: BTESettings = BTESettings(),
               progress=None, potential: str = DEFAULT_POTENTIAL) -> dict[str, BTEResult]:
    """Give the rows of the table `path` that lack `column` (one of `FILLABLE`) theirs, computed from their record's
    structure with the `potential` of its rows (`calculator`): the volume ratio by a relaxation alone (seconds a
    structure); σᴬ by the relaxation, harmonic force constants (`harmonic_fc2`, then `bte_fc2` as in `kappa_bte`)
    and the thermal samples (under a
    minute). The table is rewritten after each row, so a stopped run resumes. Rows without a record or a structure,
    or whose calculation fails, keep NaN."""
    if column not in FILLABLE:
        raise ValueError(f"no column {column!r} to fill (one of {', '.join(FILLABLE)})")
    rows = rows_of_potential(path, potential)
    for rec in records:
        row = rows.get(rec.id)
        if row is None or rec.structure is None or math.isfinite(getattr(row, column)):
            continue
        try:
            atoms, volume_ratio = relaxed(rec.structure, calculator, settings)
            filled = {"volume_ratio": volume_ratio}
            if column == "anharmonicity":
                unit, multiples = phonon_cell(atoms, settings)
                fc2 = bte_fc2(unit, multiples, harmonic_fc2(unit, multiples, calculator, settings), calculator,
                              settings, seed_of(rec))
                filled[column] = anharmonicity(unit, multiples, fc2, calculator, settings, seed_of(rec))
        except FAILURES:  # this structure's calculation failed: it keeps NaN (a rerun tries again), the run goes on
            continue
        rows[rec.id] = replace(row, **{k: v for k, v in filled.items() if not math.isfinite(getattr(row, k))})
        write_table(path, rows.values())
        if progress is not None:
            progress(rows[rec.id])
    return rows


def kappa_table(records: list[Record], calculator, path: Path, settings: BTESettings = BTESettings(),
                flagged: dict[str, str] | None = None, progress=None,
                potential: str = DEFAULT_POTENTIAL) -> dict[str, BTEResult]:
    """Every record's BTE κ by the `potential` (`calculator`'s name), appended to the CSV `path` as each finishes;
    ids already in it are skipped (resume; a table of another potential is refused). `flagged`: ids the calculator
    cannot take, with the reason, written as rows without κ; a structure whose calculation fails is written the same
    way, flagged `failed: <error>`."""
    path = Path(path)
    new_file = not path.is_file()
    done = {} if new_file else rows_of_potential(path, potential)
    if not new_file and read_header(path) != COLUMNS:
        write_table(path, done.values())  # a table of LEGACY_COLUMNS: given the new columns before rows are appended
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(COLUMNS)
        for rec in records:
            if rec.id in done:
                continue
            reason = (flagged or {}).get(rec.id, "")
            try:
                result = missing(rec, reason) if reason else kappa_bte(rec, calculator, settings)
            except FAILURES as exc:  # one structure's
                # failure (relaxation, phono3py, the potential) must not end a long run
                result = missing(rec, f"{FAILED}: {type(exc).__name__}: {str(exc)[:200]}")
            result = replace(result, potential=potential)
            writer.writerow(list(asdict(result).values()))
            f.flush()
            done[rec.id] = result
            if progress is not None:
                progress(result)
    return done
