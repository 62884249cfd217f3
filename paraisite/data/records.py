"""Records (id, formula, target, structure) read from the mirror's JSON lists, CSVs, or folders of structure files.

Every problem is reported with the file and the record it concerns. With ``on_bad="error"`` (default) all bad
records of a file are listed in one DataError; with ``on_bad="skip"`` they are logged and left out.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Element, Structure
from pymatgen.core.periodic_table import DummySpecies

from paraisite.errors import DataError

log = logging.getLogger(__name__)

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar")
STRUCTURE_PREFIXES = ("POSCAR", "CONTCAR")
TARGET_KEYS = ("kappa", "target")
TARGETS_CSV = "targets.csv"
MAX_ATOMS = 500  # larger cells are rejected: far outside the training distribution, and slow
MIN_DISTANCE = 0.5  # Å; closer atoms are overlapping (a broken structure)
MAX_LATTICE = 1000.0  # Å; a longer lattice vector is not a crystal (and the neighbour search would run out of memory)
MAX_VOLUME_PER_ATOM = 1e4  # Å³ per atom (a cube of 21.5 Å per atom; crystals hold 5-100): mostly vacuum
ELEMENT_NOT_IN_MODEL = "element_not_in_model"  # a flag: valid data the backbone cannot represent (dropped, listed)
NO_EQUILIBRIUM = "no_equilibrium"  # a flag: the quasi-harmonic backbone found no energy minimum (dropped, listed)


@dataclass
class Record:
    id: str
    formula: str
    target: float | None
    structure: Structure | None = None


class BadRecord(ValueError):
    """A record that cannot be used; the message is the reason."""


def check_target(value, key: str = "kappa") -> float:
    """A finite number; a `kappa` must also be > 0 (any other target may be negative or zero)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise BadRecord(f"target {value!r} is not a number") from None
    if not math.isfinite(x):
        raise BadRecord(f"target is {x} (must be finite)")
    if key == "kappa" and x <= 0:
        raise BadRecord(f"target is {x:g} (κ must be > 0)")
    return x


def check_structure(structure: Structure) -> Structure:
    """The structure, or BadRecord naming why a crystal graph cannot (or must not) be built from it. The cell size
    is checked before any neighbour search, whose memory grows with the cell volume."""
    if len(structure) == 0:
        raise BadRecord("no atoms")
    if not np.isfinite(structure.lattice.matrix).all():
        raise BadRecord("non-finite lattice")
    if not np.isfinite(structure.frac_coords).all():
        raise BadRecord("non-finite coordinates")
    if not structure.is_ordered:
        raise BadRecord("structure is disordered (partial occupancy); only ordered structures are supported")
    unknown = sorted({sp.symbol for sp in structure.species if isinstance(sp, DummySpecies)})
    if unknown:
        raise BadRecord(f"unknown element {', '.join(unknown)}")
    if len(structure) > MAX_ATOMS:
        raise BadRecord(f"structure has {len(structure)} atoms (more than {MAX_ATOMS})")
    if structure.volume <= 1e-6:
        raise BadRecord("the cell has no volume")
    if min(structure.lattice.abc) < MIN_DISTANCE:
        raise BadRecord(f"a lattice vector is shorter than {MIN_DISTANCE} Å (atoms overlap their images)")
    if max(structure.lattice.abc) > MAX_LATTICE:
        raise BadRecord(f"a lattice vector is {max(structure.lattice.abc):.4g} Å long (more than {MAX_LATTICE:g} Å)")
    if structure.volume / len(structure) > MAX_VOLUME_PER_ATOM:
        raise BadRecord(f"the cell holds {structure.volume / len(structure):.4g} Å³ per atom (more than "
                        f"{MAX_VOLUME_PER_ATOM:g}: mostly vacuum)")
    if len(structure) > 1:
        distances = structure.distance_matrix
        np.fill_diagonal(distances, np.inf)
        i, j = np.unravel_index(np.argmin(distances), distances.shape)
        if distances[i, j] < MIN_DISTANCE:
            raise BadRecord(f"atoms {i} and {j} overlap ({distances[i, j]:.3f} Å apart, minimum {MIN_DISTANCE} Å)")
    return structure


def parse_formula(formula: str) -> str:
    """Reduced formula of `formula`; BadRecord naming the token that is not an element."""
    try:
        comp = Composition(formula)
    except Exception as exc:  # pymatgen raises several types for bad formulas
        raise BadRecord(f"formula {formula!r} cannot be parsed ({exc})") from None
    unknown = [el.symbol for el in comp.elements if not isinstance(el, Element)]
    if unknown:
        raise BadRecord(f"formula {formula!r}: unknown element {', '.join(unknown)}")
    if comp.num_atoms <= 0:
        raise BadRecord(f"formula {formula!r} is empty")
    return comp.reduced_formula


def structure_from_file(path: Path) -> Structure:
    """Read one CIF/POSCAR/pymatgen-JSON structure file; BadRecord with the reason."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if not raw.strip():
        raise BadRecord("empty file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecord(f"not UTF-8 text (byte {exc.start})") from None
    name = path.name.lower().removesuffix(".gz")
    fmt = "json" if name.endswith(".json") else "cif" if name.endswith(".cif") else "poscar"
    try:
        structure = Structure.from_dict(json.loads(text)) if fmt == "json" else Structure.from_str(text, fmt=fmt)
    except Exception as exc:
        reason = cif_problem(text) if fmt == "cif" else None  # pymatgen's own error names neither
        raise BadRecord(f"cannot be parsed as cif: {reason}" if reason else
                        f"cannot be parsed as {fmt} ({type(exc).__name__}: {exc})") from None
    return check_structure(structure)


def cif_problem(text: str) -> str | None:
    """Why a CIF that pymatgen cannot read has no usable atoms ('no atoms', 'non-finite coordinates'), if that is
    the reason; None otherwise. Reads the first data block's atom_site loop and cell lengths only."""
    import shlex

    lines = [line.strip() for line in text.split("data_", 2)[1 if "data_" in text else 0].splitlines()]
    cell = [line.split()[1] for line in lines if line.startswith("_cell_length_") and len(line.split()) > 1]
    tags, tokens, in_loop, reading = [], [], False, False
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.startswith("loop_"):
            if reading:
                break
            in_loop, tags = True, []
        elif line.startswith("_"):
            if reading:
                break
            if in_loop:
                tags.append(line.split()[0].lower())
        elif in_loop and any(t.startswith("_atom_site_") for t in tags):
            reading = True
            try:
                tokens += shlex.split(line)
            except ValueError:
                return None
    if not any(t.startswith("_atom_site_") for t in tags) or len(tokens) < len(tags):
        return "no atoms"
    columns = [i for i, t in enumerate(tags) if t[:-1] in ("_atom_site_fract_", "_atom_site_cartn_")]
    coordinates = [tokens[k] for k in range(len(tokens)) if k % len(tags) in columns]
    if not all(math.isfinite(_cif_number(v)) for v in coordinates):
        return "non-finite coordinates"
    if not all(math.isfinite(_cif_number(v)) for v in cell):
        return "non-finite lattice"
    return None


def _cif_number(value: str) -> float:
    """A CIF number (an uncertainty in parentheses dropped); NaN for anything else."""
    try:
        return float(value.split("(")[0])
    except ValueError:
        return math.nan


def row_structure(row) -> Structure:
    """The checked structure of a record {"id", "structure": Structure.as_dict(), ...}; BadRecord with the reason."""
    if not isinstance(row, dict):
        raise BadRecord("not a JSON object")
    if "structure" not in row:
        raise BadRecord("no 'structure'")
    try:
        structure = Structure.from_dict(row["structure"])
    except Exception as exc:  # pymatgen raises many types for malformed dicts
        raise BadRecord(f"structure cannot be read ({type(exc).__name__}: {exc})") from None
    return check_structure(structure)


def _json_records(path: Path) -> list[tuple[str, callable]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            rows = json.load(f)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(rows).__name__}")

    def build(i: int, row) -> Record:
        structure = row_structure(row)
        key = next((k for k in TARGET_KEYS if k in row), None)
        target = check_target(row[key], key) if key else None
        return Record(str(row.get("id", i)), structure.composition.reduced_formula, target, structure)

    return [(str(row.get("id", i)) if isinstance(row, dict) else str(i), lambda i=i, row=row: build(i, row))
            for i, row in enumerate(rows)]


def read_csv_rows(path: Path) -> list[dict]:
    """Rows of a UTF-8 CSV (BadRecord when it is not text)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRecord(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return list(csv.DictReader(io.StringIO(text)))


def _read_csv(path: Path) -> list[dict]:
    try:
        return read_csv_rows(path)
    except BadRecord as exc:
        raise DataError(str(exc)) from None


def _csv_records(path: Path) -> list[tuple[str, callable]]:
    rows = _read_csv(path)
    columns = set(rows[0]) if rows else set()
    key = next((k for k in TARGET_KEYS if k in columns), None)
    if "formula" not in columns:
        raise DataError(f"{path}: needs a 'formula' column (and 'target' or 'kappa'); found {sorted(columns)}")

    def build(i: int, row: dict) -> Record:
        formula = parse_formula(row["formula"])
        target = check_target(row[key], key) if key else None
        return Record(row.get("id") or f"{path.stem}:{i}", formula, target, None)

    return [(row.get("id") or f"row {i + 2}", lambda i=i, row=row: build(i, row)) for i, row in enumerate(rows)]


def is_structure_file(path: Path) -> bool:
    return path.is_file() and (
        path.suffix.lower() in STRUCTURE_SUFFIXES or path.name.startswith(STRUCTURE_PREFIXES)
        or (path.suffix == ".json" and path.name != TARGETS_CSV)
    )


def _folder_records(folder: Path) -> list[tuple[str, callable]]:
    targets_csv = folder / TARGETS_CSV
    if not targets_csv.is_file():
        raise DataError(f"{folder}: a folder of structures needs {TARGETS_CSV} with columns 'id,kappa' (id = file name)")
    rows = _read_csv(targets_csv)
    key = next((k for k in TARGET_KEYS if rows and k in rows[0]), None)
    if not rows or "id" not in rows[0] or key is None:
        raise DataError(f"{targets_csv}: needs columns 'id' and 'kappa' (or 'target')")
    files = {p.name: p for p in folder.iterdir() if is_structure_file(p)}
    files.update({p.stem: p for p in files.copy().values()})

    def build(row: dict) -> Record:
        path = files.get(row["id"])
        if path is None:
            raise BadRecord(f"no structure file named {row['id']!r} in {folder}")
        target = check_target(row[key], key)
        structure = structure_from_file(path)
        return Record(row["id"], structure.composition.reduced_formula, target, structure)

    return [(row["id"], lambda row=row: build(row)) for row in rows]


def read_records(path: str | Path, on_bad: str = "error", limit: int | None = None) -> list[Record]:
    """Read records from a `.json(.gz)` list, a `formula,target` CSV, or a folder with structures + targets.csv;
    with `limit`, the first `limit` usable ones (the rest is not parsed)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        pending = _folder_records(path)
    elif path.name.endswith((".json", ".json.gz")):
        pending = _json_records(path)
    elif path.suffix == ".csv":
        pending = _csv_records(path)
    else:
        raise DataError(f"{path}: unknown data format (expected .json, .json.gz, .csv or a folder)")

    records, bad, seen = [], [], {}
    for rid, build in pending:
        if limit and len(records) == limit:
            break
        try:
            record = build()
            if record.id in seen:
                raise BadRecord(f"duplicate id (also record {seen[record.id]})")
            seen[record.id] = len(records)
            records.append(record)
        except BadRecord as exc:
            bad.append(f"{rid}: {exc}")
    if bad:
        if on_bad != "skip":
            raise DataError(f"{path}: {len(bad)} bad record(s): " + "; ".join(bad)
                            + " (datamodule.on_bad=skip leaves them out)")
        log.warning("%s: skipped %d bad record(s): %s", path, len(bad), "; ".join(bad))
    if not records:
        raise DataError(f"{path}: no usable records (empty dataset)")
    return records
