"""Files of the data mirror: locate them, verify them against SHA256SUMS (once per file version)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from paraisite.errors import DataError
from paraisite.files import write_json
from paraisite.paths import cache_dir, data_dir

log = logging.getLogger(__name__)

UPSTREAM = {
    "ltc/": "the ParAIsite repository (Dataset1/Dataset2 pickles) and AFLOW's AFLUX API (AGL)",
    "pretrained/": "matgl's published weights (matgl repository, pretrained_models/)",
    "composition/": "MatBench tables via the CrabNet repository",
    "crossprop/": "the CrossPropertyTL repository (JARVIS-DFT training splits)",
    "screening/": "the ParAIsite repository (results_scan/)",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expected_sums(root: Path) -> dict[str, str]:
    sums_file = root / "SHA256SUMS"
    if not sums_file.exists():
        return {}
    sums = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    return sums


def _missing_message(root: Path, rel: str) -> str:
    source = next((v for k, v in UPSTREAM.items() if rel.startswith(k)), "its upstream source")
    return (
        f"{root / rel}: missing from the data folder {root}. Point PARAISITE_DATA_DIR at a copy of the "
        f"data mirror (`make setup` links ../shared/data when it exists) or rebuild it from {source}."
    )


class ChecksumStamps:
    """Remembers files already verified, keyed by (path, size, mtime), in the cache folder."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.stamps = json.loads(path.read_text())
        except (OSError, ValueError):
            self.stamps = {}

    def known_good(self, file: Path, digest: str) -> bool:
        st = file.stat()
        return self.stamps.get(str(file)) == [st.st_size, st.st_mtime_ns, digest]

    def remember(self, file: Path, digest: str) -> None:
        st = file.stat()
        self.stamps[str(file)] = [st.st_size, st.st_mtime_ns, digest]
        write_json(self.path, self.stamps)


def mirror_file(rel: str, root: str | os.PathLike | None = None) -> Path:
    """Path of `rel` inside the data folder, verified against SHA256SUMS (cached). Raises DataError."""
    root = data_dir(root)
    if not root.is_dir():
        raise DataError(
            f"data folder {root} does not exist: set PARAISITE_DATA_DIR to the data mirror, or run `make setup` "
            f"(it links ../shared/data when that exists)"
        )
    path = root / rel
    if not path.is_file():
        raise DataError(_missing_message(root, rel))
    digest = expected_sums(root).get(rel)
    if digest is None:
        log.debug("%s has no checksum in %s/SHA256SUMS; not verified", rel, root)
        return path
    stamps = ChecksumStamps(cache_dir() / "checksums.json")
    if not stamps.known_good(path, digest):
        if sha256(path) != digest:
            raise DataError(f"{path}: checksum mismatch with {root}/SHA256SUMS (corrupt or modified); re-fetch it")
        stamps.remember(path, digest)
    return path


def check(root: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Verify every file listed in SHA256SUMS; returns {'ok': [...], 'missing': [...], 'corrupt': [...]}."""
    root = data_dir(root)
    sums = expected_sums(root)
    if not sums:
        raise DataError(f"{root}/SHA256SUMS: not found; cannot verify the data folder {root}")
    report: dict[str, list[str]] = {"ok": [], "missing": [], "corrupt": []}
    for rel, digest in sorted(sums.items()):
        path = root / rel
        if not path.is_file():
            report["missing"].append(rel)
        elif sha256(path) != digest:
            report["corrupt"].append(rel)
        else:
            report["ok"].append(rel)
    return report
