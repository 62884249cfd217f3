"""Named datasets (mirror files) and user files, featurized once and cached by content hash."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from paraisite.contracts import FeatureSet, Featurizer
from paraisite.data.mirror import mirror_file, sha256
from paraisite.data.records import read_records
from paraisite.errors import DataError
from paraisite.paths import cache_dir

log = logging.getLogger(__name__)

LTC_FILES = {"dataset1": "ltc/dataset1.json.gz", "dataset2": "ltc/dataset2.json.gz", "agl": "ltc/agl.json.gz"}
# A named dataset is the union of its sources; each source is split on its own (as upstream does for MIX).
LTC_DATASETS = {"dataset1": ["dataset1"], "dataset2": ["dataset2"], "mix": ["dataset1", "dataset2"], "agl": ["agl"]}
# What a composition backbone reads instead of a structure file (one value per formula).
COMPOSITION_TABLES = {"agl": "agl_composition"}
# Source tables for composition backbones (formula,target).
SOURCE_FILES = {"agl_composition": "ltc/agl_composition.csv", "mp_e_form": "composition/mp_e_form.csv",
                "mp_gap": "composition/mp_gap.csv"}
# Source tables whose value for a composition is that of its lowest row: formation energy, whose polymorphs (several
# rows per formula in the MP table) have the ground state as the composition's value. Other tables keep every row.
GROUND_STATE_TABLES = {"mp_e_form"}
# The 41 small targets of cross-property transfer learning: `crossprop/<name>` (formula,target).
CROSSPROP = (
    "bulkmoduluskv deltae ehull encut eps etc11 etc12 etc13 etc22 etc33 etc44 etc55 etc66 exfoliation_energy "
    "expt_bandgap expt_deltae kaa klu magmom_oszicar magmom_outcar max_ir_mode max_mode mbj_bandgap meps min_ir_mode "
    "min_mode nem300k npowerfact nseebeck optb88vdw_bandgap pem300k piezo_max_di piezo_max_diel piezo_max_diio "
    "piezo_max_dij piezo_max_eij ppowerfact pseebeck shearmodulusgv slme spillage"
).split()
MIRROR_FILES = {**LTC_FILES, **SOURCE_FILES, **{f"crossprop/{n}": f"crossprop/{n}/train.csv" for n in CROSSPROP}}


def sources_of(name: str) -> list[str]:
    """Sources of a named dataset, or of a user's path; `a.json+b.json` is the union of two files."""
    if name in LTC_DATASETS:
        return LTC_DATASETS[name]
    if name in MIRROR_FILES:
        return [name]
    if "+" in name:
        return [s for part in name.split("+") for s in sources_of(part)]
    if name.startswith("crossprop/"):
        raise DataError(f"unknown cross-property dataset {name!r}: use crossprop/<name> with one of {CROSSPROP}")
    if os.sep in name or Path(name).suffix or Path(name).exists():
        return [name]
    raise DataError(f"unknown dataset {name!r}: use one of {sorted(LTC_DATASETS)}, crossprop/<name>, "
                    f"{sorted(SOURCE_FILES)} or a path to your own data")


def source_path(source: str, data_dir: str | None = None, by_composition: bool = False) -> Path:
    """The file of a source; `by_composition` picks its composition table where one exists (AGL)."""
    if by_composition:
        source = COMPOSITION_TABLES.get(source, source)
    return mirror_file(MIRROR_FILES[source], data_dir) if source in MIRROR_FILES else Path(source).expanduser()


def content_hash(path: Path) -> str:
    """SHA-256 of a file, or of a folder's file names and contents."""
    if path.is_file():
        return sha256(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256(p).encode())
    return h.hexdigest()


def featurized(source: str, featurizer: Featurizer, data_dir: str | None = None, on_bad: str = "error",
               limit: int | None = None) -> FeatureSet:
    """Featurized records of `source` (the first `limit` usable ones), from the cache when the content is unchanged."""
    path = source_path(source, data_dir, featurizer.by_composition)
    key = featurizer.key(content_hash(path), extra=f"on_bad={on_bad}" + (f"|limit={limit}" if limit else ""))
    label = source.replace("/", "_") if source in MIRROR_FILES else path.name.split(".")[0]
    cached = cache_dir() / "features" / f"{label}-{key}.pt"
    data = featurizer.load(cached)
    if data is None:
        log.info("featurizing %s (cache miss)", path)
        data = featurizer.build(read_records(path, on_bad=on_bad, limit=limit))
        featurizer.save(data, cached)
    return data
