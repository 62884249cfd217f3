"""Named datasets (mirror files) and user files, featurized once and cached by content hash."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from paraisite.data.mirror import mirror_file, sha256
from paraisite.data.records import read_records
from paraisite.errors import DataError
from paraisite.paths import cache_dir

log = logging.getLogger(__name__)

LTC_FILES = {"dataset1": "ltc/dataset1.json.gz", "dataset2": "ltc/dataset2.json.gz", "agl": "ltc/agl.json.gz"}
# A named dataset is the union of its sources; each source is split on its own (as upstream does for MIX).
LTC_DATASETS = {"dataset1": ["dataset1"], "dataset2": ["dataset2"], "mix": ["dataset1", "dataset2"], "agl": ["agl"]}


def sources_of(name: str) -> list[str]:
    """Sources of a named LTC dataset, or of a user's path; `a.json+b.json` is the union of two files."""
    if name in LTC_DATASETS:
        return LTC_DATASETS[name]
    if "+" in name:
        return [s for part in name.split("+") for s in sources_of(part)]
    if os.sep in name or Path(name).suffix or Path(name).exists():
        return [name]
    raise DataError(f"unknown dataset {name!r}: use one of {sorted(LTC_DATASETS)} or a path to your own data")


def source_path(source: str, data_dir: str | None = None) -> Path:
    return mirror_file(LTC_FILES[source], data_dir) if source in LTC_FILES else Path(source).expanduser()


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


def featurized(source: str, featurizer, data_dir: str | None = None, on_bad: str = "error"):
    """Featurized records of `source` (GraphSet or the like), from the cache when the content is unchanged."""
    path = source_path(source, data_dir)
    key = featurizer.key(content_hash(path), extra=f"on_bad={on_bad}")
    cached = cache_dir() / "features" / f"{Path(source).name.split('.')[0]}-{key}.pt"
    data = featurizer.load(cached)
    if data is None:
        log.info("featurizing %s (cache miss)", path)
        data = featurizer.build(read_records(path, on_bad=on_bad))
        featurizer.save(data, cached)
    return data
