"""Data layer: mirror checksums, records and bad input, splits, target transform, graph cache."""

import shutil

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from paraisite.data import datasets
from paraisite.data.datamodule import LTCDataModule
from paraisite.data.graphs import NO_NEIGHBORS, GraphFeaturizer, build_graphs
from paraisite.data.mirror import check, mirror_file
from paraisite.data.records import read_records
from paraisite.data.splits import split_indices
from paraisite.data.transforms import LogStandardizer, Standardizer
from paraisite.errors import ConfigError, DataError
from paraisite.models.regressor import TransferRegressor, best_constant
from paraisite.paths import data_dir
from paraisite.target import Target
from tests.conftest import write_records
from tests.helpers import stage

EFORM_GRAPHS = GraphFeaturizer(4.0, __import__("matgl.config").config.DEFAULT_ELEMENTS)


def test_mirror_checksums_all_ok():
    report = check()
    assert report["missing"] == [] and report["corrupt"] == []
    assert "ltc/dataset1.json.gz" in report["ok"] and len(report["ok"]) > 50


def test_corrupt_and_missing_files_are_named(tmp_path):
    root = tmp_path / "mirror"
    (root / "ltc").mkdir(parents=True)
    shutil.copy(data_dir() / "SHA256SUMS", root / "SHA256SUMS")
    (root / "ltc" / "dataset1.json.gz").write_bytes(b"not the real file")
    with pytest.raises(DataError, match=r"dataset1\.json\.gz: checksum mismatch"):
        mirror_file("ltc/dataset1.json.gz", root)
    with pytest.raises(DataError, match=r"dataset2\.json\.gz: missing from the data folder"):
        mirror_file("ltc/dataset2.json.gz", root)
    with pytest.raises(DataError, match=r"data folder .*nowhere does not exist"):
        mirror_file("ltc/dataset1.json.gz", tmp_path / "nowhere")
    report = check(root)
    assert "ltc/dataset1.json.gz" in report["corrupt"] and "ltc/dataset2.json.gz" in report["missing"]


@pytest.mark.parametrize("name,count", [("dataset1", 95), ("dataset2", 143),
                                        pytest.param("agl", 3256, marks=pytest.mark.slow)])
def test_named_datasets_load(name, count):
    records = read_records(datasets.source_path(name))
    assert len(records) == count
    assert all(r.target > 0 and r.structure is not None for r in records)


def test_user_folder_of_cifs(tmp_path, mirror_records):
    folder = tmp_path / "mine"
    folder.mkdir()
    lines = ["id,kappa"]
    for row in mirror_records[:3]:
        Structure.from_dict(row["structure"]).to(filename=str(folder / f"{row['id']}.cif"))
        lines.append(f"{row['id']},{row['kappa']}")
    (folder / "targets.csv").write_text("\n".join(lines))
    records = read_records(folder)
    assert [r.id for r in records] == [row["id"] for row in mirror_records[:3]]
    assert records[0].formula == Structure.from_dict(mirror_records[0]["structure"]).composition.reduced_formula


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.update(kappa=float("nan")), r"mp-\S+: target is nan"),
    (lambda r: r.update(kappa=-1.5), r"mp-\S+: target is -1.5 \(κ must be > 0\)"),
    (lambda r: r.update(kappa=0), r"mp-\S+: target is 0 \(κ must be > 0\)"),
    (lambda r: r["structure"]["sites"][0]["species"][0].update(element="Xx"), r"mp-\S+: structure cannot be read"),
    (lambda r: r.pop("structure"), r"mp-\S+: no 'structure'"),
])
def test_bad_records_are_named(tmp_path, mirror_records, mutate, message):
    rows = [dict(r, structure=dict(r["structure"], sites=[dict(s, species=[dict(x) for x in s["species"]])
                                                          for s in r["structure"]["sites"]])) for r in mirror_records[:4]]
    mutate(rows[2])
    path = write_records(tmp_path / "bad.json", rows)
    with pytest.raises(DataError, match=rf"bad\.json: 1 bad record\(s\): {message}"):
        read_records(path)
    assert len(read_records(path, on_bad="skip")) == 3


def test_malformed_cif_is_named(tmp_path, mirror_records):
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\nloop_\n_atom_site_label\n")
    (folder / "targets.csv").write_text("id,kappa\nbroken,1.0\n")
    with pytest.raises(DataError, match=r"cifs: 1 bad record\(s\): broken: cannot be parsed as cif"):
        read_records(folder)


def test_empty_dataset_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match=r"empty\.json: no usable records \(empty dataset\)"):
        read_records(write_records(tmp_path / "empty.json", []))
    with pytest.raises(DataError, match=r"notes\.txt: unknown data format"):
        (tmp_path / "notes.txt").write_text("x")
        read_records(tmp_path / "notes.txt")


def test_element_outside_the_model_is_dropped_and_listed(tmp_path, mirror_records):
    po = Structure(Lattice.cubic(3.35), ["Po"], [[0, 0, 0]])  # the model's element list has no Po
    rows = mirror_records[:10] + [{"id": "polonium", "kappa": 1.0, "structure": po.as_dict()}]
    dm = LTCDataModule(str(write_records(tmp_path / "po.json", rows)), EFORM_GRAPHS, seed=1)
    dm.setup()
    assert [(d["id"], d["reason"]) for d in dm.dropped] == [("polonium", "element_not_in_model: Po")]


def test_isolated_cell_is_flagged_and_dropped(tmp_path, mirror_records):
    lonely = Structure(Lattice.cubic(9.0), ["Na"], [[0, 0, 0]])  # no neighbour within 4 Å
    graphs = build_graphs(read_records(write_records(tmp_path / "x.json", [
        {"id": "lonely", "kappa": 2.0, "structure": lonely.as_dict()}, mirror_records[0]])), 4.0,
        EFORM_GRAPHS.element_types)
    assert graphs.flags == [NO_NEIGHBORS, ""]
    rows = mirror_records[:20] + [{"id": "lonely", "kappa": 2.0, "structure": lonely.as_dict()}]
    dm = LTCDataModule(str(write_records(tmp_path / "y.json", rows)), EFORM_GRAPHS, seed=3)
    dm.setup()
    assert [d["id"] for d in dm.dropped] == ["lonely"]
    assert all("lonely" != dm.data.ids[i] for split in dm.splits.values() for i in split)


@pytest.mark.parametrize("protocol", ["paper", "holdout"])
def test_splits_reproducible_and_disjoint(protocol):
    a, b = split_indices(95, 7, protocol), split_indices(95, 7, protocol)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], split_indices(95, 8, protocol)["test"])
    if protocol == "holdout":
        parts = [set(a[k]) for k in ("train", "val", "test")]
        assert sum(map(len, parts)) == 95 and len(set.union(*parts)) == 95
    else:
        assert np.array_equal(a["val"], a["test"]) and not set(a["train"]) & set(a["test"])
    assert len(a["test"]) == 19
    # the honest protocol tests on exactly the paper's 20 %
    assert np.array_equal(split_indices(95, 7, "paper")["test"], split_indices(95, 7, "holdout")["test"])


def test_mix_is_split_per_source():
    dms = {name: LTCDataModule(name, EFORM_GRAPHS, seed=4) for name in ("dataset1", "dataset2", "mix")}
    for dm in dms.values():
        dm.setup()
    for split in ("train", "val", "test"):
        ids = lambda dm: {dm.data.ids[i] for i in dm.splits[split]}  # noqa: E731
        assert ids(dms["mix"]) == ids(dms["dataset1"]) | ids(dms["dataset2"])


def test_formula_level_split_and_the_lowest_row_per_formula(tmp_path):
    from paraisite.data.composition import CompositionFeaturizer

    rows = [f"{f},{y}" for i in range(40) for f, y in ((f"Na{i + 1}Cl", 1.0 + i), (f"Na{i + 1}Cl", 0.5 + i))]
    path = tmp_path / "polymorphs.csv"
    path.write_text("formula,target\n" + "\n".join(rows) + "\n")
    by_row = LTCDataModule(str(path), CompositionFeaturizer(), seed=3)
    by_formula = LTCDataModule(str(path), CompositionFeaturizer(), seed=3, group_by="formula")
    lowest = LTCDataModule(str(path), CompositionFeaturizer(), seed=3, group_by="formula", per_formula="lowest")
    for dm in (by_row, by_formula, lowest):
        dm.setup()
    assert by_row.formulas("train") & by_row.formulas("test")  # polymorphs straddle a row-level split
    assert not by_formula.formulas("train") & by_formula.formulas("test")
    assert not by_formula.formulas("val") & (by_formula.formulas("train") | by_formula.formulas("test"))
    assert sum(map(len, by_formula.splits.values())) == 80
    kept = np.concatenate(list(lowest.splits.values()))
    assert len(kept) == 40 and lowest.n_not_lowest == 40
    assert sorted(lowest.data.target[kept].tolist()) == [0.5 + i for i in range(40)]  # each formula's lowest
    with pytest.raises(ValueError, match="per_formula"):
        LTCDataModule(str(path), CompositionFeaturizer(), seed=3, per_formula="median")


def test_transform_round_trip_and_fit_on_train_only():
    kappa = torch.tensor([0.5, 2.0, 30.0, 1500.0], dtype=torch.float64)
    t = LogStandardizer().fit(kappa[:3])
    assert torch.allclose(t.decode(t.encode(kappa)), kappa, rtol=1e-12)
    y = torch.log10(kappa[:3] + 1)
    assert float(t.mean) == pytest.approx(float(y.mean())) and float(t.std) == pytest.approx(float(y.std()))


def test_log_offset_is_the_learnt_scale_and_results_without_it_mean_one():
    kappa = torch.tensor([0.5, 2.0, 30.0, 1500.0], dtype=torch.float64)
    plain = Target.from_data_config({"target": "kappa", "log_offset": 0}).transform().fit(kappa[:3])
    assert float(plain.mean) == pytest.approx(float(torch.log10(kappa[:3]).mean()))
    assert torch.allclose(plain.decode(plain.encode(kappa)), kappa, rtol=1e-12)
    assert float(plain.decode_raw(torch.tensor([-50.0]))) > 0  # a plain log never decodes below κ = 0
    assert Target.from_data_config({"target": "kappa"}).transform().offset == 1.0
    assert Target.of_results({"target": {"kind": "kappa", "name": "kappa", "unit": "W/mK"}}).log_offset == 1.0
    with pytest.raises(ConfigError, match="data.log_offset=-1"):
        Target.from_data_config({"target": "kappa", "log_offset": -1})


@pytest.mark.parametrize("loss", ["mape", "l1"])
def test_the_centre_of_the_loss_is_its_best_constant_and_a_fresh_head_starts_there(loss):
    kappa = torch.tensor([0.5, 2.0, 30.0, 0.8, 4.0], dtype=torch.float64)
    t = LogStandardizer()
    start = float(t.fit(kappa, best_constant(kappa, loss, t)).decode(torch.zeros(1, dtype=torch.float64)))
    grid = torch.linspace(0.1, 40, 4000, dtype=torch.float64)
    scores = ((grid[:, None] - kappa).abs() / kappa).mean(1) if loss == "mape" \
        else (torch.log10(grid[:, None] + 1) - torch.log10(kappa + 1)).abs().mean(1)
    assert start == pytest.approx(float(grid[scores.argmin()]), abs=0.02)  # 0.8 (MAPE), 2.0 (L1 of the logs)
    assert start == pytest.approx(0.8 if loss == "mape" else 2.0, rel=1e-9)
    module = TransferRegressor(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), Target(centre="loss"))
    module.start_stage(stage(loss=loss), kappa)  # each stage refits the scaler: the centre of its own loss
    assert float(module.transform.mean) == pytest.approx(float(t.mean))
    assert float(t.std) == pytest.approx(float(torch.log10(kappa + 1).std()))  # the scale is unchanged
    assert Target.from_data_config({"target": "kappa", "centre": "loss"}).centre == "loss"
    assert Target.of_results({"target": {"kind": "kappa", "name": "kappa", "unit": "W/mK"}}).centre == "mean"
    with pytest.raises(ConfigError, match="data.centre='median' is not allowed"):
        Target.from_data_config({"target": "kappa", "centre": "median"})


def test_kappa_decodes_to_zero_or_more_and_the_loss_keeps_a_gradient_below_zero():
    t = LogStandardizer().fit(torch.tensor([0.5, 2.0, 30.0], dtype=torch.float64))
    assert (float(t.train_min), float(t.train_max)) == (0.5, 30.0)  # stored with the model (buffers)
    z = torch.tensor([-50.0, -3.0, 0.0], requires_grad=True)  # the first two decode below κ = 0 without the floor
    assert float(t.decode_raw(z)[1]) < 0 and torch.equal(t.decode(z)[:2], torch.zeros(2))
    loss = ((t.decode_raw(z) - 1.0).abs() / 1.0).sum()  # the MAPE loss uses the raw decode
    loss.backward()
    assert z.grad[1] < 0  # pushes the prediction up, where a clamp would give no gradient
    assert z.grad[0] == z.grad[1]  # as strongly far below zero: the tangent at κ = 0, not a vanishing 10**y slope
    at_zero = (-t.mean / t.std).reshape(1)  # z of κ = 0 (log10(0 + 1) = 0): the two branches meet there
    assert float(t.decode_raw(at_zero)) == pytest.approx(0.0, abs=1e-12)
    assert t.extrapolation(301.0) and t.extrapolation(0.04) and not t.extrapolation(299.0)
    assert Standardizer().extrapolation(1e9) == ""  # range unknown (not fitted, or an old file): no judgement


def test_graph_cache_is_reused(monkeypatch, isolated_cache):
    first = datasets.featurized("dataset2", EFORM_GRAPHS)
    files = sorted((isolated_cache / "features").glob("dataset2-*.pt"))
    monkeypatch.setattr(EFORM_GRAPHS.__class__, "build", lambda *a: pytest.fail("rebuilt a cached dataset"))
    second = datasets.featurized("dataset2", EFORM_GRAPHS)
    assert sorted((isolated_cache / "features").glob("dataset2-*.pt")) == files
    assert second.ids == first.ids and torch.equal(second.edge_index, first.edge_index)
    # another cutoff is another cache entry
    assert EFORM_GRAPHS.key("h") != GraphFeaturizer(5.0, EFORM_GRAPHS.element_types).key("h")


def test_truncated_cache_file_is_rebuilt(isolated_cache):
    datasets.featurized("dataset1", EFORM_GRAPHS)
    content = datasets.content_hash(datasets.source_path("dataset1"))
    path = isolated_cache / "features" / f"dataset1-{EFORM_GRAPHS.key(content, extra='on_bad=error')}.pt"
    path.write_bytes(path.read_bytes()[:100])
    again = datasets.featurized("dataset1", EFORM_GRAPHS)
    assert len(again) == 95


def test_data_check_cli(tmp_path, capsys):
    from paraisite.cli import main

    assert main(["data", "check"]) == 0
    assert " 0 missing, 0 corrupt" in capsys.readouterr().out
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 2
    assert "SHA256SUMS: not found" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["dataset1", "mix"])
def test_paper_protocol_selects_on_the_test_split(dataset):
    paper = LTCDataModule(dataset, EFORM_GRAPHS, seed=6, protocol="paper")
    holdout = LTCDataModule(dataset, EFORM_GRAPHS, seed=6, protocol="holdout")
    paper.setup()
    holdout.setup()
    assert np.array_equal(paper.splits["val"], paper.splits["test"])
    assert np.array_equal(paper.splits["test"], holdout.splits["test"])
    assert set(paper.splits["train"]) == set(holdout.splits["train"]) | set(holdout.splits["val"])
