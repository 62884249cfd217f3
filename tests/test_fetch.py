"""`paraisite data fetch` against recorded responses; the network is mocked at urllib.request.urlopen only."""

import gzip
import io
import json
import os
import pickle
import sys
import types
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from paraisite.cli import main as cli
from paraisite.data import fetch
from paraisite.data.legacy import safe_loads, structure_from_stub
from paraisite.data.mirror import check
from paraisite.errors import DataError
from tests.conftest import ROOT

RECORDED = ROOT / "tests" / "data" / "recorded"
EXPLOITED = "/tmp/paraisite-legacy-exploited"


class FakeWeb:
    """urlopen stand-in serving recorded bytes by URL; anything else is a 404."""

    def __init__(self, pages: dict[str, bytes]):
        self.pages, self.asked = pages, []

    def __call__(self, request, timeout=None):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        self.asked.append(url)
        if url not in self.pages:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return io.BytesIO(self.pages[url])


def legacy_module(name: str, classes: dict) -> types.ModuleType:
    module = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__ = name, cls_name
        setattr(module, cls_name, cls)
    sys.modules[name] = module
    return module


class Element:
    def __init__(self, symbol):
        self.symbol = symbol

    def __reduce__(self):
        return Element, (self.symbol,)

    def __hash__(self):
        return hash(self.symbol)


class Composition:
    pass


class Lattice:
    pass


class PeriodicSite:
    pass


class Structure_:  # pickled under pymatgen.core.structure.Structure
    pass


def legacy_structure_pickle(structures: list[Structure]) -> bytes:
    """Pickles laid out like an old pymatgen's Structure objects, written under pymatgen's module names."""
    legacy_module("legacy_pt", {"Element": Element})
    legacy_module("legacy_comp", {"Composition": Composition})
    legacy_module("legacy_lattice", {"Lattice": Lattice})
    legacy_module("legacy_sites", {"PeriodicSite": PeriodicSite})
    legacy_module("legacy_structure", {"Structure": Structure_})
    objects = []
    for s in structures:
        lattice = Lattice()
        lattice.__dict__ = {"_matrix": np.array(s.lattice.matrix), "_pbc": (True, True, True)}
        sites = []
        for site in s:
            comp = Composition()
            comp.__dict__ = {"_data": {Element(site.specie.symbol): 1.0}, "_natoms": 1.0}
            ps = PeriodicSite()
            ps.__dict__ = {"_species": comp, "_frac_coords": np.array(site.frac_coords), "_lattice": lattice}
            sites.append(ps)
        obj = Structure_()
        obj.__dict__ = {"_lattice": lattice, "_sites": sites, "_charge": 0}
        objects.append(obj)
    data = pickle.dumps(objects, protocol=2)
    for fake, real in ((b"legacy_pt", b"pymatgen.core.periodic_table"), (b"legacy_comp", b"pymatgen.core.composition"),
                       (b"legacy_lattice", b"pymatgen.core.lattice"), (b"legacy_sites", b"pymatgen.core.sites"),
                       (b"legacy_structure", b"pymatgen.core.structure")):
        data = data.replace(fake, real)
    return data


class Exploit:
    def __reduce__(self):
        return os.system, (f"touch {EXPLOITED}",)


@pytest.fixture
def web(monkeypatch, mirror_records):
    page = (RECORDED / "aflux_page1.json").read_bytes()
    agl_url = fetch.AFLUX + "?" + fetch.urllib.parse.quote(fetch.AGL_QUERY.format(page=1, size=1000),
                                                           safe="$(),*")
    pages = {agl_url: page}
    for row in json.loads(page):
        cif = RECORDED / fetch.entry_cif_url(row["aurl"]).rsplit("/", 1)[-1]
        if cif.exists():
            pages[fetch.entry_cif_url(row["aurl"])] = cif.read_bytes()
    base = f"{fetch.PARAISITE_REPO}/src/structures_scalers"
    for name, rows in (("Dataset1", mirror_records[:3]), ("Dataset2", mirror_records[3:5])):
        pages[f"{base}/{name}.pkl"] = pickle.dumps({r["id"]: r["kappa"] for r in rows})
        pages[f"{base}/structures_{name}.pkl"] = legacy_structure_pickle([Structure.from_dict(r["structure"])
                                                                          for r in rows])
    state = io.BytesIO()
    torch.save({"model.layer.weight": torch.ones(2, 2)}, state)
    for name in fetch.WEIGHTS:
        pages[fetch.HF_HUB.format(name=name, file="model.json")] = b'{"@class": "TransformedTargetModel"}'
        pages[fetch.HF_HUB.format(name=name, file="state.pt")] = state.getvalue()
        pages[fetch.HF_HUB.format(name=name, file="README.md")] = b"# model\n"
    fake = FakeWeb(pages)
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    return fake


def test_fetch_everything_offline(web, tmp_path, mirror_records, capsys):
    assert cli(["data", "fetch", "--dest", str(tmp_path)]) == 0
    assert "agl=2, agl_skipped=1, dataset1=3, dataset2=2, weights=3" in capsys.readouterr().out
    with gzip.open(tmp_path / "ltc" / "agl.json.gz", "rt") as f:
        agl = json.load(f)
    assert [(r["id"], r["formula"], r["kappa"]) for r in agl] == [("aflow:Ag1_ICSD_64706", "Ag", 38.9135),
                                                                  ("aflow:Cl1Na1_ICSD_240598", "NaCl", 4.38)]
    with gzip.open(tmp_path / "ltc" / "dataset1.json.gz", "rt") as f:
        d1 = json.load(f)
    for got, want in zip(d1, mirror_records[:3]):
        assert got["id"] == want["id"] and got["kappa"] == want["kappa"]
        a, b = Structure.from_dict(got["structure"]), Structure.from_dict(want["structure"])
        assert np.allclose(a.lattice.matrix, b.lattice.matrix) and np.allclose(a.frac_coords, b.frac_coords)
        assert [s.symbol for s in a.species] == [s.symbol for s in b.species]
    assert (tmp_path / "pretrained" / fetch.WEIGHTS[0] / "state.pt").is_file()
    report = check(tmp_path)
    assert not report["missing"] and not report["corrupt"] and len(report["ok"]) == 3 + 3 * 3


def test_unreachable_upstream_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(urllib.request, "urlopen", FakeWeb({}))
    with pytest.raises(DataError, match=r"aflow\.org/API/aflux/.*download failed .*404"):
        fetch.fetch(tmp_path, ["agl"])


def test_malicious_legacy_pickle_is_read_without_running(web, tmp_path):
    if os.path.exists(EXPLOITED):
        os.remove(EXPLOITED)
    base = f"{fetch.PARAISITE_REPO}/src/structures_scalers"
    web.pages[f"{base}/structures_Dataset1.pkl"] = pickle.dumps([Exploit(), Exploit(), Exploit()])
    with pytest.raises(DataError, match="expected a pickled pymatgen Structure, found system"):
        fetch.fetch(tmp_path, ["paraisite"])
    assert not os.path.exists(EXPLOITED)
    stub = safe_loads(pickle.dumps(Exploit()))
    assert stub.name == "system" and stub.args == (f"touch {EXPLOITED}",)
    with pytest.raises(DataError):
        structure_from_stub(stub)


def test_weights_that_need_unpickling_are_refused(web, tmp_path):
    buffer = io.BytesIO()
    torch.save({"model.x": Exploit()}, buffer)
    web.pages[fetch.HF_HUB.format(name=fetch.WEIGHTS[0], file="state.pt")] = buffer.getvalue()
    with pytest.raises(DataError, match="state.pt: not a plain tensor state dict"):
        fetch.fetch(tmp_path, ["weights"])
    assert not os.path.exists(EXPLOITED)
