"""Rebuild the data mirror from upstream on a machine with internet: `paraisite data fetch --dest DIR`.

- AGL: AFLOW's AFLUX API (`$catalog(ICSD),agl_thermal_conductivity_300K(*)`, paged) and each entry's standard
  primitive CIF, keeping the entry id with its value (upstream ParAIsite stored the values as a bare list).
- Dataset1/Dataset2: the ParAIsite repository's legacy pickles, read with `legacy.SafeUnpickler` (executes nothing).
- MEGNet/M3GNet weights: matgl's published models (`model.json`, `state.pt`, `README.md`) from the Hugging Face hub.
Every file is written atomically and listed in the destination's SHA256SUMS.
"""

from __future__ import annotations

import gzip
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path

from paraisite.data.legacy import instance_of, safe_loads, structure_from_stub
from paraisite.data.mirror import sha256
from paraisite.data.records import BadRecord, check_structure, check_target, row_structure
from paraisite.errors import DataError
from paraisite.files import write_atomic

log = logging.getLogger(__name__)

AFLUX = "https://aflow.org/API/aflux/"
AGL_QUERY = "$catalog(ICSD),agl_thermal_conductivity_300K(*),$paging({page},{size})"
PARAISITE_REPO = "https://raw.githubusercontent.com/liudakl/ParAIsite/main"
HF_HUB = "https://huggingface.co/materialyze/{name}/resolve/main/{file}"
WEIGHTS = ("MEGNet-MP-2018.6.1-Eform", "MEGNet-MP-2019.4.1-BandGap-mfi", "M3GNet-MP-2018.6.1-Eform")
WEIGHT_FILES = ("model.json", "state.pt", "README.md")


def http_get(url: str, timeout: float = 60) -> bytes:
    """The one network call of the project."""
    request = urllib.request.Request(url, headers={"User-Agent": "paraisite-data-fetch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DataError(f"{url}: download failed ({exc})") from None


def write_records(records: list[dict], path: Path) -> Path:
    return write_atomic(path, gzip.compress(json.dumps(records).encode(), mtime=0))


def entry_cif_url(aurl: str) -> str:
    """aflowlib.duke.edu:AFLOWDATA/ICSD_WEB/FCC/Ag1_ICSD_64706 → …/Ag1_ICSD_64706/Ag1_ICSD_64706_sprim.cif"""
    host, path = aurl.split(":", 1)
    entry = path.rstrip("/").rsplit("/", 1)[-1]
    return f"https://{host}/{path.rstrip('/')}/{entry}_sprim.cif"


def fetch_agl(dest: Path, page_size: int = 1000, max_pages: int = 1000) -> dict:
    """AGL κ(300 K) of AFLOW-ICSD entries with their structures → ltc/agl.json.gz. Returns counts."""
    from pymatgen.core import Structure

    entries = []
    for page in range(1, max_pages + 1):
        query = urllib.parse.quote(AGL_QUERY.format(page=page, size=page_size), safe="$(),*")
        url = f"{AFLUX}?{query}"
        try:
            rows = json.loads(http_get(url))
        except ValueError as exc:
            raise DataError(f"{url}: not JSON ({exc})") from None
        entries += rows
        if len(rows) < page_size:
            break
    records, skipped = [], []
    for row in entries:
        entry = row["aurl"].rstrip("/").rsplit("/", 1)[-1]
        try:
            kappa = check_target(row["agl_thermal_conductivity_300K"])
            cif = http_get(entry_cif_url(row["aurl"])).decode("utf-8")
            structure = check_structure(Structure.from_str(cif, fmt="cif"))
        except (BadRecord, DataError, ValueError, KeyError) as exc:
            skipped.append(f"{entry}: {exc}")
            continue
        records.append({"id": f"aflow:{entry}", "formula": structure.composition.reduced_formula,
                        "kappa": kappa, "structure": structure.as_dict()})
    if skipped:
        log.warning("AGL: skipped %d entries: %s", len(skipped), "; ".join(skipped[:20]))
    write_records(records, dest / "ltc" / "agl.json.gz")
    return {"agl": len(records), "agl_skipped": len(skipped)}


def legacy_values(obj, what: str) -> list:
    """A legacy κ table or structure list: a plain list/tuple/array, or a dict {id: value}."""
    import numpy as np

    if isinstance(obj, dict):
        return list(obj.items())
    if isinstance(obj, (list, tuple, np.ndarray)):
        return list(obj)
    raise DataError(f"{what}: unsupported legacy layout {instance_of(obj)[0] if hasattr(obj, 'args') else type(obj)}")


def fetch_paraisite(dest: Path, repo: str = PARAISITE_REPO) -> dict:
    """Dataset1/Dataset2 from upstream's pickles (κ list + structure list, same order)."""
    counts = {}
    for name, out in (("Dataset1", "dataset1"), ("Dataset2", "dataset2")):
        base = f"{repo}/src/structures_scalers"
        kappas = legacy_values(safe_loads(http_get(f"{base}/{name}.pkl")), f"{name}.pkl")
        structures = legacy_values(safe_loads(http_get(f"{base}/structures_{name}.pkl")), f"structures_{name}.pkl")
        if len(kappas) != len(structures):
            raise DataError(f"{name}: {len(kappas)} κ values but {len(structures)} structures")
        records = []
        for i, (kappa, stub) in enumerate(zip(kappas, structures)):
            rid, value = kappa if isinstance(kappa, tuple) else (f"{out}:{i}", kappa)
            structure = row_structure({"structure": structure_from_stub(stub)})
            records.append({"id": str(rid), "formula": structure.composition.reduced_formula,
                            "kappa": check_target(value), "structure": structure.as_dict()})
        write_records(records, dest / "ltc" / f"{out}.json.gz")
        counts[out] = len(records)
    return counts


def fetch_weights(dest: Path, names: tuple[str, ...] = WEIGHTS) -> dict:
    """matgl's published weights; state.pt must load as plain tensors (weights_only=True)."""
    import io

    import torch

    for name in names:
        for file in WEIGHT_FILES:
            data = http_get(HF_HUB.format(name=name, file=file))
            if file == "state.pt":
                try:
                    torch.load(io.BytesIO(data), weights_only=True)
                except Exception as exc:
                    raise DataError(f"{name}/state.pt: not a plain tensor state dict ({exc})") from None
            write_atomic(dest / "pretrained" / name / file, data)
    return {"weights": len(names)}


SOURCES = ("agl", "paraisite", "weights")


def fetch(dest: str | Path, only: list[str] | None = None, paraisite_repo: str | None = None) -> dict:
    """Fetch the chosen sources into `dest` and (re)write its SHA256SUMS."""
    dest = Path(dest)
    repo = paraisite_repo or PARAISITE_REPO
    steps = {"agl": partial(fetch_agl, dest), "paraisite": partial(fetch_paraisite, dest, repo),
             "weights": partial(fetch_weights, dest)}
    counts = {}
    for source in only or SOURCES:
        if source not in steps:
            raise DataError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
        counts.update(steps[source]())
    files = sorted(p for p in dest.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    write_atomic(dest / "SHA256SUMS", "".join(f"{sha256(p)}  {p.relative_to(dest)}\n" for p in files))
    return counts
