"""`paraisite predict`: ensembles, bad structures flagged, equality with the LightningModule, output formats."""

import csv
import json
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pymatgen.core import Lattice, Structure

from paraisite import chain
from paraisite.cli import main as cli
from paraisite.data.datamodule import LTCDataModule
from paraisite.errors import ParaisiteError
from paraisite.evaluate import predict_split
from paraisite.predict import load_ensemble, predict
from tests.conftest import write_records
from tests.helpers import compose_cfg
from tests.test_prior import write_bte_table


@pytest.fixture
def structure_folder(tmp_path, mirror_records):
    folder = tmp_path / "inputs"
    (folder / "nested").mkdir(parents=True)
    for row in mirror_records[:3]:
        Structure.from_dict(row["structure"]).to(filename=str(folder / "nested" / f"{row['id']}.cif"))
    Structure.from_dict(mirror_records[3]["structure"]).to(filename=str(folder / "POSCAR"), fmt="poscar")
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\nloop_\n_atom_site_label\nXx\n")
    Structure(Lattice.cubic(9.0), ["Na"], [[0, 0, 0]]).to(filename=str(folder / "isolated.cif"))
    Structure(Lattice.cubic(3.35), ["Po"], [[0, 0, 0]]).to(filename=str(folder / "polonium.cif"))
    return folder


def read_rows(path):
    with open(path) as f:
        return {Path(r["id"]).name: r for r in csv.DictReader(f)}


def test_folder_with_bad_structures(two_runs, structure_folder, tmp_path, capsys, mirror_records):
    out = tmp_path / "preds.csv"
    assert cli(["predict", str(structure_folder), "--run", str(two_runs), "--output", str(out), "--top", "2"]) == 0
    rows = read_rows(out)
    assert set(rows) == {f"{r['id']}.cif" for r in mirror_records[:3]} | {"POSCAR", "broken.cif", "isolated.cif",
                                                                         "polonium.cif"}
    good = [r for r in rows.values() if not r["flag"]]
    assert len(good) == 4 and all(float(r["kappa_mean"]) > -1 for r in good)
    assert rows["broken.cif"]["flag"].startswith("parse_error: ") and rows["broken.cif"]["kappa_mean"] == ""
    assert rows["isolated.cif"]["flag"] == "no_neighbors_within_cutoff"
    assert rows["polonium.cif"]["flag"] == "element_not_in_model: Po"
    printed = capsys.readouterr().out
    assert "4 predicted, 3 flagged" in printed and "lowest-κ candidates" in printed


def test_nothing_predicted_is_an_error_exit(two_runs, tmp_path):
    (tmp_path / "bad.cif").write_text("not a cif")
    assert cli(["predict", str(tmp_path / "bad.cif"), "--run", str(two_runs), "--output", str(tmp_path / "o.csv")]) == 1


def test_ensemble_mean_and_std_by_hand(two_runs, structure_folder, tmp_path):
    members = load_ensemble([two_runs])
    assert len(members) == 2
    out = tmp_path / "p.csv"
    predict([structure_folder], members, out)
    for row in read_rows(out).values():
        if row["flag"]:
            continue
        a, b = (float(row[f"kappa_{m.name}"]) for m in members)
        assert float(row["kappa_mean"]) == pytest.approx((a + b) / 2, rel=1e-12)
        assert float(row["kappa_std"]) == pytest.approx(abs(a - b) / np.sqrt(2), rel=1e-9)  # sample std, ddof=1


@pytest.mark.slow
def test_predictions_equal_the_lightning_module(two_runs, tmp_path, mirror_records):
    (member,) = load_ensemble([two_runs / "s1"])
    dm = partial(LTCDataModule, featurizer=member.featurizer, seed=1)(dataset="dataset1")
    dm.setup()
    _, expected = predict_split(member.module, dm, "test")
    test_ids = [dm.data.ids[i] for i in dm.splits["test"]]
    by_id = {r["id"]: r for r in mirror_records}
    records = write_records(tmp_path / "test.json", [by_id[i] for i in test_ids])
    out = tmp_path / "p.parquet"
    counts = predict([records], [member], out, chunk_size=7, batch_size=3)
    table = pq.read_table(out).to_pydict()
    assert counts["predicted"] == len(test_ids) and table["id"] == test_ids
    np.testing.assert_allclose(table["kappa_mean"], expected, rtol=1e-5, atol=1e-5)


def test_model_file_of_another_format_is_refused(tmp_path):
    import torch

    (tmp_path / "run").mkdir()
    torch.save({"format": 99, "state_dict": {}}, tmp_path / "run" / "model.pt")
    with pytest.raises(Exception, match=r"model format 99, this paraisite reads format 2"):
        load_ensemble([tmp_path / "run"])


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(two_runs, structure_folder, tmp_path):
    members = load_ensemble([two_runs])
    predict([structure_folder], members, tmp_path / "inline.csv", chunk_size=2)
    predict([structure_folder], members, tmp_path / "workers.csv", chunk_size=2, workers=2)
    assert (tmp_path / "inline.csv").read_text() == (tmp_path / "workers.csv").read_text()


def test_models_load_without_the_data_folder(two_runs, structure_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PARAISITE_DATA_DIR", str(tmp_path / "no-data-here"))
    counts = predict([structure_folder], load_ensemble([two_runs]), tmp_path / "p.csv")
    assert counts["predicted"] == 4


def test_json_lines_with_bad_rows_are_flagged(two_runs, tmp_path, mirror_records):
    lines = [json.dumps(mirror_records[0]), "{not json", json.dumps({"id": "bare", "kappa": 1.0}), json.dumps([1, 2])]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    counts = predict([tmp_path / "in.jsonl"], load_ensemble([two_runs]), tmp_path / "p.csv")
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert counts == {**counts, "predicted": 1, "flagged": 3}
    assert rows[1]["flag"].startswith("parse_error: JSONDecodeError")
    assert (rows[2]["id"], rows[2]["flag"]) == ("bare", "parse_error: no 'structure'")
    assert rows[3]["flag"] == "parse_error: not a JSON object"


def a_cif(path, mirror_records, k=0):
    Structure.from_dict(mirror_records[k]["structure"]).to(filename=str(path))
    return path


def test_output_that_is_an_input_is_refused_and_left_intact(two_runs, tmp_path, mirror_records, capsys):
    cif = a_cif(tmp_path / "victim.cif", mirror_records)
    (tmp_path / "formulas.csv").write_text("formula\nNaCl\n")
    (tmp_path / "link.cif").symlink_to(cif)
    before = {p: p.read_bytes() for p in (cif, tmp_path / "formulas.csv")}
    for inputs, output in [([cif], cif), ([tmp_path / "formulas.csv"], tmp_path / "formulas.csv"),
                           ([cif], tmp_path / "link.cif"), ([tmp_path], tmp_path / "new.cif")]:
        assert cli(["predict", *map(str, inputs), "--run", str(two_runs), "--output", str(output)]) == 2
        assert f"--output {output}" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "new.cif").exists()
    # beside its inputs, under a name the folder scan does not read, the output is fine
    assert cli(["predict", str(tmp_path), "--run", str(two_runs), "--output", str(tmp_path / "preds.csv")]) == 0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_crash_mid_way_leaves_the_earlier_output(two_runs, structure_folder, tmp_path, monkeypatch, suffix):
    import paraisite.predict as module

    out = tmp_path / f"preds{suffix}"
    out.write_bytes(b"an earlier result")
    calls = []
    real_infer = module.infer

    def infer_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after one chunk was written
        return real_infer(*args, **kwargs)

    monkeypatch.setattr(module, "infer", infer_then_crash)
    with pytest.raises(KeyboardInterrupt):
        predict([structure_folder], load_ensemble([two_runs]), out, chunk_size=2)
    assert out.read_bytes() == b"an earlier result" and sorted(tmp_path.iterdir()) == sorted([out, structure_folder])
    monkeypatch.setattr(module, "infer", real_infer)
    assert predict([structure_folder], load_ensemble([two_runs]), out, chunk_size=2)["predicted"] == 4
    assert sorted(tmp_path.iterdir()) == sorted([out, structure_folder])


def test_kappa_is_never_negative_and_far_predictions_are_marked(two_runs, structure_folder, tmp_path, capsys):
    """A member whose scaler is shifted predicts κ < 0 before the floor (and far above its training range)."""
    low, high = load_ensemble([two_runs / "s1"]), load_ensemble([two_runs / "s2"])
    assert float(low[0].module.transform.train_min) > 0  # the training range is stored with the model
    low[0].module.transform.mean.fill_(-8.0)  # log10(κ+1) ≈ -8 → κ = 10^-8 - 1 < 0 without the floor
    high[0].module.transform.mean.fill_(8.0)
    out = tmp_path / "p.csv"
    counts = predict([structure_folder], low, out, top=2, below=2)
    rows = [r for r in read_rows(out).values() if not r["flag"]]
    assert len(rows) == 4 and all(float(r["kappa_mean"]) == 0.0 for r in rows)
    assert counts["extrapolated"] == 4 and all("outside training range" in r["extrapolation"] for r in rows)
    assert all(c["mean"] >= 0 and c["extrapolation"] for c in counts["top"])
    counts = predict([structure_folder], high, out)
    assert counts["extrapolated"] == 4 and all(float(r["kappa_mean"]) > 1e6 for r in read_rows(out).values()
                                               if not r["flag"])
    counts = predict([structure_folder], load_ensemble([two_runs]), out)  # the models as trained: within range
    assert counts["extrapolated"] == 0 and all(r["extrapolation"] == "" for r in read_rows(out).values())


def test_model_file_without_the_training_range_still_loads(two_runs, structure_folder, tmp_path):
    import torch

    payload = torch.load(two_runs / "s1" / "model.pt", weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.endswith(("train_min", "train_max"))}
    (tmp_path / "old").mkdir()
    torch.save(payload, tmp_path / "old" / "model.pt")
    (member,) = load_ensemble([tmp_path / "old"])
    assert np.isnan(float(member.module.transform.train_min))  # unknown range: nothing is marked
    counts = predict([structure_folder], [member], tmp_path / "p.csv")
    assert counts["predicted"] == 4 and counts["extrapolated"] == 0
    del payload["state_dict"][next(k for k in payload["state_dict"] if k.startswith("head."))]
    torch.save(payload, tmp_path / "old" / "model.pt")
    with pytest.raises(RuntimeError, match="Missing key"):  # any other missing weight is still an error
        load_ensemble([tmp_path / "old"])


def with_data(two_runs, tmp_path, name, data):
    import torch

    payload = torch.load(two_runs / "s1" / "model.pt", weights_only=True)
    payload["config"]["data"] = data
    (tmp_path / name).mkdir()
    torch.save(payload, tmp_path / name / "model.pt")
    return tmp_path / name


def test_members_predicting_different_properties_are_refused(two_runs, tmp_path):
    gap = with_data(two_runs, tmp_path, "gap", {"name": "optb88vdw_bandgap", "dataset": "crossprop/optb88vdw_bandgap",
                                                "target": "generic", "unit": "eV"})
    exfoliation = with_data(two_runs, tmp_path, "exf", {"name": "exfoliation_energy", "target": "generic",
                                                        "dataset": "crossprop/exfoliation_energy", "unit": "meV/atom"})
    with pytest.raises(ParaisiteError, match=r"different properties.*optb88vdw_bandgap \(eV\): .*gap/model\.pt; "
                                             r"exfoliation_energy \(meV/atom\): .*exf/model\.pt"):
        load_ensemble([gap, exfoliation])
    with pytest.raises(ParaisiteError, match=r"kappa \(W/mK\): .*s1/model\.pt.*; optb88vdw_bandgap \(eV\)"):
        load_ensemble([two_runs, gap])
    # κ runs of other LTC sets predict the same property: the screening ensemble
    mix = with_data(two_runs, tmp_path, "mix", {"name": "mix", "dataset": "mix", "target": "kappa"})
    assert len(load_ensemble([two_runs, mix])) == 3


def test_clear_messages_for_missing_run_bad_top(two_runs, tmp_path, capsys):
    a_cif = tmp_path / "x.cif"
    a_cif.write_text("not read")
    assert cli(["predict", str(a_cif), "--run", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o.csv")]) == 2
    assert "--run " + str(tmp_path / "nowhere") + ": no such run folder or model file" in capsys.readouterr().err
    for flag, value in (("--top", "0"), ("--top", "-3"), ("--batch-size", "0")):
        with pytest.raises(SystemExit) as exit_:
            cli(["predict", str(a_cif), "--run", str(two_runs), "--output", str(tmp_path / "o.csv"), flag, value])
        assert exit_.value.code == 2 and "give a number ≥ 1" in capsys.readouterr().err


def test_a_refused_feature_regressor_names_the_model_file(two_runs, tmp_path):
    import skops.io as sio
    import torch
    from sklearn.preprocessing import FunctionTransformer

    payload = torch.load(two_runs / "s1" / "model.pt", weights_only=True)
    payload["config"]["head"] = {"_target_": "paraisite.models.features.SklearnHead"}
    state = {k: v for k, v in payload["state_dict"].items() if not k.startswith("head.")}
    crafted = bytearray(sio.dumps(FunctionTransformer(func=print)))
    state["head.skops"] = torch.frombuffer(crafted, dtype=torch.uint8)
    payload["state_dict"] = state
    (tmp_path / "run").mkdir()
    torch.save(payload, tmp_path / "run" / "model.pt")
    with pytest.raises(ParaisiteError, match=r"run/model\.pt: head\.skops .*refusing to load types "
                                             r"\['builtins\.print'\] \(safe loading refuses"):
        load_ensemble([tmp_path / "run"])


def test_a_bundle_predicts_what_its_runs_predict_without_runs_or_data(two_runs, structure_folder, tmp_path,
                                                                       monkeypatch, capsys):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"training_data": "dataset2 (smoke)"}))
    assert cli(["bundle", str(two_runs), "--output", str(tmp_path / "b"), "--card", str(card)]) == 0
    manifest = json.loads((tmp_path / "b" / "model.json").read_text())
    assert len(manifest["members"]) == 2 and manifest["card"] == {"training_data": "dataset2 (smoke)"}
    (route,) = manifest["routes"]
    assert route["stoichiometry"] is None and route["members"] == [m["name"] for m in manifest["members"]]
    assert {"Al", "As"} <= set(route["domain"]["elements"]) and route["domain"]["max_atoms"] > 1
    assert {p.name for p in (tmp_path / "b").iterdir()} == {"model.json", "weights.safetensors"}
    predict([structure_folder], load_ensemble([two_runs]), tmp_path / "runs.csv")
    monkeypatch.setenv("PARAISITE_DATA_DIR", str(tmp_path / "no-data-here"))
    assert cli(["predict", str(structure_folder), "--model", str(tmp_path / "b"), "--output",
                str(tmp_path / "bundle.csv"), "--quiet"]) == 0
    runs, bundled = read_rows(tmp_path / "runs.csv"), read_rows(tmp_path / "bundle.csv")
    assert runs.keys() == bundled.keys()
    for key, row in runs.items():
        assert row["kappa_mean"] == bundled[key]["kappa_mean"] and row["flag"] == bundled[key]["flag"]


def test_int8_stores_each_weight_within_half_a_step_of_its_blocks_scale():
    import torch

    from paraisite.models.bundle import BLOCK, SCALE, packed, unpacked

    rows = torch.randn(5, 3, 2) * torch.tensor([1e-3, 1.0, 30.0, 0.0, 2.0]).reshape(5, 1, 1)  # 30 weights: per row
    blocks = torch.randn(4, BLOCK // 2) * torch.tensor([1.0, 1.0, 1e-3, 1e-3]).reshape(4, 1)  # two blocks
    state = {"rows": rows, "blocks": blocks, "b": torch.randn(4), "steps": torch.tensor(7)}
    stored = {k: v for key, value in state.items() for k, v in packed(key, value, "int8").items()}
    assert stored["rows"].dtype == stored["blocks"].dtype == torch.int8
    assert stored["rows" + SCALE].shape == (5,) and stored["blocks" + SCALE].shape == (2,)
    assert stored["b"].dtype == torch.float16 and stored["steps"].dtype == torch.int64
    read = unpacked(stored)
    assert read.keys() == state.keys() and all(v.dtype == state[k].dtype for k, v in read.items())
    for key, step in [("rows", rows.abs().amax(dim=(1, 2), keepdim=True) / 127),
                      ("blocks", blocks.reshape(2, -1).abs().amax(dim=1).repeat_interleave(2).reshape(4, 1) / 127)]:
        assert torch.all((read[key] - state[key]).abs() <= step / 2 + 1e-6 * state[key].abs())
    assert torch.all(read["rows"][3] == 0) and torch.equal(read["steps"], state["steps"])
    assert torch.allclose(read["b"], state["b"], rtol=1e-3)
    assert packed("w", rows, "float32") == {"w": rows}


def test_an_int8_bundle_is_a_quarter_of_the_size_and_predicts_within_a_percent(two_runs, structure_folder, tmp_path,
                                                                               capsys):
    for precision in ("float32", "int8"):
        assert cli(["bundle", str(two_runs), "--precision", precision, "--output", str(tmp_path / precision)]) == 0
        assert f"weights.safetensors, {precision})" in capsys.readouterr().out
        assert cli(["predict", str(structure_folder), "--model", str(tmp_path / precision), "--output",
                    str(tmp_path / f"{precision}.csv"), "--quiet"]) == 0
    size = {p: (tmp_path / p / "weights.safetensors").stat().st_size for p in ("float32", "int8")}
    assert size["int8"] < 0.3 * size["float32"]
    full, small = read_rows(tmp_path / "float32.csv"), read_rows(tmp_path / "int8.csv")
    assert full.keys() == small.keys()
    assert [r["flag"] for r in small.values()] == [r["flag"] for r in full.values()]
    predicted = [key for key, row in full.items() if not row["flag"]]
    assert predicted and all(float(small[key]["kappa_mean"]) == pytest.approx(float(full[key]["kappa_mean"]), rel=1e-2)
                             for key in predicted)
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "int8" / "weights.safetensors"
    tensors = load_file(weights)
    lost = next(k for k in tensors if k.endswith("@scale"))
    save_file({k: v for k, v in tensors.items() if k != lost}, weights)  # a damaged file: a matrix without its scales
    assert cli(["predict", str(structure_folder), "--model", str(tmp_path / "int8"), "--output",
                str(tmp_path / "x.csv"), "--quiet"]) == 2
    member, key = lost.removesuffix("@scale").split("/", 1)
    assert f"weights.safetensors: member {member}: unreadable weights ({key}: torch.int8" in capsys.readouterr().err
    assert cli(["bundle", str(two_runs), "--precision", "int4", "--output", str(tmp_path / "x")]) == 2
    assert "precision 'int4': give one of float32, float16, int8" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_routed_bundle_predicts_each_structure_with_the_members_of_its_route(two_runs, tmp_path, capsys):
    """Seed 1 (trained on half-Heuslers) takes the 1:1:1 compounds of its training set's space group (F-43m),
    seed 2 the rest; in float16 each prediction is its run's within 1e-3."""
    half_heusler = Structure.from_spacegroup("F-43m", Lattice.cubic(5.9), ["Ti", "Ni", "Sn"],
                                             [[0, 0, 0], [.25, .25, .25], [.5, .5, .5]]).get_primitive_structure()
    other_abc = Structure(Lattice.cubic(3.0), ["Ti", "Ni", "Sn"], [[0, 0, 0], [.5, .5, 0], [.5, 0, .5]])
    ab = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]])
    folder = tmp_path / "in"
    folder.mkdir()
    for name, structure in [("hh", half_heusler), ("abc", other_abc), ("ab", ab)]:
        structure.to(filename=str(folder / f"{name}.cif"))
    assert cli(["bundle", str(two_runs / "s2"), "--route", "half-heuslers", "1:1:1", str(two_runs / "s1"),
                "--precision", "float16", "--output", str(tmp_path / "b")]) == 0
    assert "route half-heuslers (1:1:1 compounds in space group(s) 216): 1 member(s)" in capsys.readouterr().out
    predict([folder], load_ensemble([two_runs / "s1"]), tmp_path / "s1.csv")
    predict([folder], load_ensemble([two_runs / "s2"]), tmp_path / "s2.csv")
    assert cli(["predict", str(folder), "--model", str(tmp_path / "b"), "--output", str(tmp_path / "b.csv"),
                "--quiet"]) == 0
    s1, s2, routed = (read_rows(tmp_path / f"{n}.csv") for n in ("s1", "s2", "b"))
    for name, route in [("hh.cif", "half-heuslers"), ("abc.cif", "other"), ("ab.cif", "other")]:
        row, own = routed[name], ("m0-s1" if route == "half-heuslers" else "m1-s2")
        expected = (s1 if route == "half-heuslers" else s2)[name]
        assert row["route"] == route and row["flag"] == "" and float(row["kappa_std"]) == 0.0
        assert float(row["kappa_mean"]) == pytest.approx(float(expected["kappa_mean"]), rel=1e-3)
        assert [k for k, v in row.items() if k.startswith("kappa_m") and k != "kappa_mean" and v] == [f"kappa_{own}"]
    assert cli(["predict", str(folder), "--model", str(tmp_path / "b"), "--run", str(two_runs), "--output",
                str(tmp_path / "x.csv")]) == 2
    assert "routes structures to its members (half-heuslers, other): it predicts alone" in capsys.readouterr().err


def test_a_format_1_bundle_still_reads_as_one_route(two_runs, tmp_path):
    from paraisite.models.bundle import read_bundle

    assert cli(["bundle", str(two_runs), "--output", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "b" / "model.json").read_text())
    (route,) = manifest.pop("routes")
    manifest.update(format=1, domain=route["domain"])  # what bundles held before routes
    (tmp_path / "b" / "model.json").write_text(json.dumps(manifest))
    members, _, (read,) = read_bundle(tmp_path / "b")
    assert read.name == "all" and read.stoichiometry is None and read.members == tuple(m.name for m in members)
    assert read.domain.elements == frozenset(route["domain"]["elements"])
    assert all(m.route is None for m in load_ensemble([], bundles=[tmp_path / "b"]))


def test_bad_routes_are_refused(two_runs, tmp_path, capsys):
    assert cli(["bundle", str(two_runs), "--route", "x", "1:one", str(two_runs), "--output", str(tmp_path / "b")]) == 2
    assert "stoichiometry '1:one': give whole element amounts" in capsys.readouterr().err
    assert cli(["bundle", str(two_runs), "--route", "x", "1:1", str(two_runs / "s1"), "--output", str(tmp_path / "b")]) == 2
    assert "stoichiometry 1:1: the route's training data (dataset2) hold no such compound" in capsys.readouterr().err
    assert cli(["bundle", str(two_runs), "--route", "x", "1:1:1", str(two_runs / "s1"), "--route", "y", "1:1:1",
                str(two_runs / "s2"), "--output", str(tmp_path / "b")]) == 2
    assert "two routes share a stoichiometry" in capsys.readouterr().err
    assert cli(["bundle", "--output", str(tmp_path / "b")]) == 2
    assert "give the runs of every structure no route takes (or --extend" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_bad_bundles_and_no_model_are_named(two_runs, tmp_path, capsys):
    a_cif = tmp_path / "x.cif"
    a_cif.write_text("not read")
    out = ["--output", str(tmp_path / "o.csv")]
    assert cli(["predict", str(a_cif), *out]) == 2
    assert "give the models: --run RUN" in capsys.readouterr().err
    assert cli(["predict", str(a_cif), "--model", "no-such-model", *out]) == 2
    assert "--model no-such-model: neither a bundle folder" in capsys.readouterr().err
    cli(["bundle", str(two_runs), "--output", str(tmp_path / "b")])
    (tmp_path / "b" / "weights.safetensors").write_bytes(b"garbage")
    assert cli(["predict", str(a_cif), "--model", str(tmp_path / "b"), *out]) == 2
    assert f"{tmp_path / 'b'}: unreadable model bundle" in capsys.readouterr().err


def test_the_training_domain_notes_new_elements_and_larger_cells():
    from paraisite.models.bundle import Domain

    domain = Domain(frozenset({"Na", "Cl", "O"}), 8)
    assert domain.outside("NaCl", 8) == ""
    assert domain.outside("NaUO3", 40) == "element(s) U not in the training data; 40 atoms > the largest training cell (8)"
    assert Domain(frozenset({"Na"}), None).outside("Na", 500) == ""  # composition data: no cell size


@pytest.mark.slow  # several seconds: left out of the edit loop (make test-fast)
def test_the_shipped_kappa_model_predicts_without_runs_or_data(tmp_path, monkeypatch, capsys):
    """Without --bte: the three routes of plain members, each with its interval and BTE prior. With --bte: a
    rock-salt binary with rows of both potentials goes to the binaries' BTE route (a committee: each member reads its
    own potential's row), with SevenNet-0's row alone it keeps its route, blended with the prior; a fluorite (a kind
    no BTE route trained on) with a row keeps its route, blended with the prior."""
    from paraisite.models.bundle import read_bundle

    monkeypatch.setenv("PARAISITE_DATA_DIR", str(tmp_path / "no-data-here"))
    members, card, routes = read_bundle("kappa")
    assert len(members) >= 5 and card["name"] == "kappa"
    by_domain = {r.name: r for r in routes if r.needs_bte}
    plain = [r for r in routes if not r.needs_bte]
    assert all({"Na", "Cl"} <= r.domain.elements for r in [*plain, by_domain["binaries-bte"]])
    bte = by_domain["binaries-bte"]
    assert bte.bte_kinds == (((1, 1), (186, 216, 225)),)
    assert by_domain["half-heuslers-bte"].bte_kinds == (((1, 1, 1), (216,)),)
    assert (bte.bte_potentials, by_domain["half-heuslers-bte"].bte_potentials) == (
        ("7net-0", "7net-mf-0-r2scan"), ("7net-0",))
    assert all(r.prior is None and r.interval.level == 0.9 for r in by_domain.values())
    nacl = Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4,
                     [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
    nacl.to(filename=str(tmp_path / "NaCl.cif"))
    Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.46), ["Ca", "F"], [[0, 0, 0], [.25, .25, .25]]).to(
        filename=str(tmp_path / "CaF2.cif"))
    inputs = [str(tmp_path / "NaCl.cif"), str(tmp_path / "CaF2.cif")]
    assert cli(["predict", *inputs, "--model", "kappa", "--output", str(tmp_path / "p.csv"), "--quiet", "--top", "1"]) == 0
    assert "90 % interval" in capsys.readouterr().out
    rows = read_rows(tmp_path / "p.csv")
    row = rows["NaCl.cif"]
    assert float(row["kappa_mean"]) > 0 and float(row["kappa_std"]) >= 0 and row["flag"] == ""
    assert sum(key.startswith("kappa_m") and key != "kappa_mean" for key in row) == len(members) - sum(
        len(r.members) for r in by_domain.values())
    assert row["route"] == "binaries" and rows["CaF2.cif"]["route"] == "other"
    assert all(r.interval.level == 0.9 for r in routes)
    assert float(row["kappa_lo90"]) < float(row["kappa_mean"]) < float(row["kappa_hi90"])
    assert all(r.prior is not None and r.prior.interval.level == 0.9 for r in plain)
    write_bte_table(tmp_path / "bte.csv", [(inputs[0], "NaCl", 2.0, ""), (inputs[1], "CaF2", 3.0, "")])
    write_bte_table(tmp_path / "scan.csv", [(inputs[0], "NaCl", 4.0, "")], "7net-mf-0-r2scan")
    assert cli(["predict", *inputs, "--model", "kappa", "--bte", str(tmp_path / "bte.csv"),
                "--output", str(tmp_path / "one.csv"), "--quiet"]) == 0
    one_potential = read_rows(tmp_path / "one.csv")["NaCl.cif"]  # the committee reads two potentials' rows
    binaries = next(r.prior for r in routes if r.name == "binaries")
    assert one_potential["route"] == "binaries"
    assert one_potential["bte_note"] == "route binaries-bte needs rows of 7net-mf-0-r2scan too"  # blended all the same
    assert float(one_potential["kappa_mean"]) == pytest.approx(float(binaries.blend(float(row["kappa_mean"]), 2.0)))
    assert cli(["predict", *inputs, "--model", "kappa", "--bte", str(tmp_path / "bte.csv"), str(tmp_path / "scan.csv"),
                "--output", str(tmp_path / "b.csv"), "--quiet"]) == 0
    with_bte = read_rows(tmp_path / "b.csv")
    by_input = with_bte["NaCl.cif"]
    own = [float(by_input[f"kappa_{name}"]) for name in bte.members]
    assert by_input["route"] == "binaries-bte" and by_input["bte_note"] == "the models' input, no BTE prior"
    assert float(by_input["kappa_bte"]) == 2.0 and len(own) == len(bte.members) > 5
    assert float(by_input["kappa_mean"]) == pytest.approx(np.mean(own))
    assert float(by_input["kappa_hi90"]) == pytest.approx(float(by_input["kappa_mean"]) * np.exp(bte.interval.ln_halfwidth))
    blended, other = with_bte["CaF2.cif"], rows["CaF2.cif"]
    prior = next(r.prior for r in routes if r.name == "other")
    assert blended["route"] == "other" and float(blended["kappa_ensemble"]) == pytest.approx(float(other["kappa_mean"]))
    assert float(blended["kappa_mean"]) == pytest.approx(float(prior.blend(float(other["kappa_mean"]), 3.0)))
    assert float(blended["kappa_hi90"]) == pytest.approx(
        float(blended["kappa_mean"]) * np.exp(prior.interval.ln_halfwidth))


@pytest.mark.slow
def test_a_plain_log_run_predicts_its_own_test_predictions(tmp_path, mirror_records):
    results = chain.run(compose_cfg("finetune=dft", "data=dataset1", "data.log_offset=0"), tmp_path / "run")
    assert results["target"]["log_offset"] == 0
    (member,) = load_ensemble([tmp_path / "run"])
    assert member.module.transform.offset == 0.0  # rebuilt from the stored config
    with open(tmp_path / "run" / "test_predictions.csv") as f:
        tested = {r["id"]: float(r["prediction"]) for r in csv.DictReader(f) if r["test_set"] == "dataset1"}
    records = write_records(tmp_path / "in.json", [r for r in mirror_records if r["id"] in tested])
    predict([records], [member], tmp_path / "p.csv")
    predicted = {Path(r["id"]).name: float(r["kappa_mean"]) for r in read_rows(tmp_path / "p.csv").values()}
    assert predicted.keys() == tested.keys()
    np.testing.assert_allclose([predicted[i] for i in tested], list(tested.values()), rtol=1e-5)


def fake_cv_row(folder, recorded: dict, residuals: np.ndarray, overrides: dict = ()) -> None:
    """The 5 fold runs of one cv repeat (seed 1) of the `recorded` config's recipe, predicting material i of
    dataset2 as 10·e^residuals[i] for a true 10."""
    from paraisite.recipe import run_label
    from omegaconf import OmegaConf

    ids = [f"mat-{i}" for i in range(len(residuals))]
    for fold in range(5):
        config = {**recorded, "protocol": "cv", "fold": fold, "seed": 1, **dict(overrides)}
        run = folder / f"f{fold}"
        run.mkdir(parents=True)
        (run / "run_key.json").write_text(json.dumps({"config": config}))
        (run / "results.json").write_text(json.dumps({"status": "ok", "config": run_label(OmegaConf.create(config)),
                                                      "test": {"dataset2": {"mape": 0.1, "n": 4}}}))
        with open(run / "test_predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["test_set", "id", "target", "prediction"])
            for i in range(fold, len(ids), 5):
                writer.writerow(["dataset2", ids[i], 10.0, 10.0 * np.exp(residuals[i])])


def test_a_bundle_calibrated_on_its_recipes_cv_row_writes_conformal_intervals(two_runs, tmp_path, capsys):
    """20 out-of-fold log residuals 0.05 … 1.0: the 90 % interval is the 19th smallest (⌈21 · 0.9⌉), ×/÷ e^0.95;
    cv runs of another recipe are not taken for it."""
    from paraisite.report import recorded_config

    recorded = recorded_config(two_runs / "s1")
    residuals = 0.05 * np.arange(1, 21) * np.where(np.arange(20) % 2, 1, -1)
    fake_cv_row(tmp_path / "cv", recorded, residuals)
    lr_changed = {"stage_overrides": {**recorded["stage_overrides"], "lr": 0.5}}
    fake_cv_row(tmp_path / "other_cv", recorded, residuals, lr_changed)
    assert cli(["bundle", str(two_runs), "--interval-cv", str(tmp_path / "cv"), str(tmp_path / "other_cv"),
                "--output", str(tmp_path / "b")]) == 0
    assert "90% interval: ×/÷ 2.59, calibrated on megnet/eform/dft/dataset2 [cv] (stage_overrides.lr=null)" in capsys.readouterr().out
    (route,) = json.loads((tmp_path / "b" / "model.json").read_text())["routes"]
    assert route["interval"]["ln_halfwidth"] == pytest.approx(0.95) and route["interval"]["n_calibration"] == 20
    folder = tmp_path / "in"
    folder.mkdir()
    Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]]).to(filename=str(folder / "ab.cif"))
    assert cli(["predict", str(folder), "--model", str(tmp_path / "b"), "--output", str(tmp_path / "p.csv"),
                "--quiet"]) == 0
    row = read_rows(tmp_path / "p.csv")["ab.cif"]
    mean = float(row["kappa_mean"])
    assert float(row["kappa_lo90"]) == pytest.approx(mean * np.exp(-0.95))
    assert float(row["kappa_hi90"]) == pytest.approx(mean * np.exp(0.95))
    assert cli(["bundle", str(two_runs), "--interval-cv", str(tmp_path / "other_cv"), "--output",
                str(tmp_path / "c")]) == 2
    assert ("no cv row(s) of the recipe megnet/eform/dft/dataset2 in the folders given (rows of that grid point "
            "with other settings: megnet/eform/dft/dataset2 [cv]") in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert cli(["predict", str(folder), "--run", str(two_runs), "--interval-cv", str(tmp_path / "cv"), "--output",
                str(tmp_path / "r.csv"), "--quiet"]) == 0  # the runs themselves, calibrated alike
    assert read_rows(tmp_path / "r.csv")["ab.cif"]["kappa_lo90"] == row["kappa_lo90"]
    assert cli(["predict", str(folder), "--model", str(tmp_path / "b"), "--interval-cv", str(tmp_path / "cv"),
                "--output", str(tmp_path / "r.csv")]) == 2
    assert "a bundle carries its own interval" in capsys.readouterr().err


def test_a_committee_of_two_recipes_is_calibrated_on_the_mean_of_their_out_of_fold_ensembles(two_runs, tmp_path):
    """Models of two recipes in one route: the interval is calibrated on each material's mean of the two recipes'
    out-of-fold ensembles; a committee holding more models of one recipe than of the other is refused."""
    from paraisite.cli import cv_rows, interval_for
    from paraisite.report import recorded_config

    recorded = recorded_config(two_runs / "s1")
    fake_cv_row(tmp_path / "cv", recorded, np.full(20, 0.4))
    fake_cv_row(tmp_path / "other_cv", recorded, np.full(20, -0.2),
                {"stage_overrides": {**recorded["stage_overrides"], "lr": 0.5}})
    rows = cv_rows([str(tmp_path / "cv"), str(tmp_path / "other_cv")])
    interval = interval_for("committee", (tmp_path / "cv/f0/model.pt", tmp_path / "other_cv/f0/model.pt"), rows, 0.9)
    assert interval.ln_halfwidth == pytest.approx(np.log((np.exp(0.4) + np.exp(-0.2)) / 2))
    assert interval.n_calibration == 20 and interval.calibrated_on.startswith("committee, per material the mean of")
    with pytest.raises(ParaisiteError, match="committee hold 2 and 1 models of 2 recipes; a committee holds as many"):
        interval_for("committee", (tmp_path / "cv/f0/model.pt", tmp_path / "cv/f1/model.pt",
                                   tmp_path / "other_cv/f0/model.pt"), rows, 0.9)


def test_a_bundle_with_a_bte_prior_blends_structures_that_have_a_bte_kappa(two_runs, tmp_path, capsys):
    """The cv row predicts 20 materials of true κ 10 with log errors up to ±1; the BTE table says 5 for each (ranked
    perfectly, half the level): the prior takes the physics alone (w 1), and a structure with a BTE κ is blended with
    it, one without keeps the members' mean; a table row of another formula is refused."""
    from paraisite.report import recorded_config

    fake_cv_row(tmp_path / "cv", recorded_config(two_runs / "s1"), 0.05 * np.arange(1, 21) * np.where(np.arange(20) % 2, 1, -1))
    write_bte_table(tmp_path / "cv_bte.csv", [(f"mat-{i}", "TiNiSn", 5.0, "") for i in range(20)])
    assert cli(["bundle", str(two_runs), "--output", str(tmp_path / "b"), "--bte", str(tmp_path / "cv_bte.csv")]) == 2
    assert "give them with --interval-cv" in capsys.readouterr().err
    assert cli(["bundle", str(two_runs), "--interval-cv", str(tmp_path / "cv"), "--bte", str(tmp_path / "cv_bte.csv"),
                "--output", str(tmp_path / "b")]) == 0
    assert "BTE prior: weight 1.00" in capsys.readouterr().out
    (route,) = json.loads((tmp_path / "b" / "model.json").read_text())["routes"]
    prior = route["prior"]
    assert prior["n_calibration"] == 20 and prior["mape_blended"] < 0.05 < prior["mape_model"]
    folder = tmp_path / "in"
    folder.mkdir()
    for name, a in (("ab.cif", 3.3), ("cd.cif", 3.5)):
        Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]]).to(filename=str(folder / name))
    write_bte_table(tmp_path / "bte.csv", [("ab.cif", "NaCl", 4.0, "")])
    assert cli(["predict", str(folder), "--model", str(tmp_path / "b"), "--bte", str(tmp_path / "bte.csv"),
                "--output", str(tmp_path / "p.csv"), "--quiet"]) == 0
    assert "0 flagged; 1 blended with their BTE κ" in capsys.readouterr().out  # found by its file name
    rows = read_rows(tmp_path / "p.csv")
    ab, cd = rows["ab.cif"], rows["cd.cif"]
    ensemble = float(ab["kappa_ensemble"])
    expected = np.exp(np.log(ensemble) + prior["weight"] * (np.log(4.0) + prior["centre"] - np.log(ensemble))
                      + prior["shift"])
    assert float(ab["kappa_mean"]) == pytest.approx(expected) and float(ab["kappa_bte"]) == 4.0
    assert ab["bte_note"] == "" and float(ab["kappa_hi90"]) == pytest.approx(
        float(ab["kappa_mean"]) * np.exp(prior["interval"]["ln_halfwidth"]))
    assert cd["kappa_mean"] == cd["kappa_ensemble"] and cd["kappa_bte"] == ""
    assert cd["bte_note"] == "not in the BTE tables"
    write_bte_table(tmp_path / "wrong.csv", [("ab.cif", "KBr", 4.0, "")])
    assert cli(["predict", str(folder), "--model", str(tmp_path / "b"), "--bte", str(tmp_path / "wrong.csv"),
                "--output", str(tmp_path / "w.csv"), "--quiet"]) == 2
    assert "ab.cif: the BTE table holds KBr under this id, the input is NaCl" in capsys.readouterr().err
    assert not (tmp_path / "w.csv").exists()
    assert cli(["predict", str(folder), "--run", str(two_runs), "--bte", str(tmp_path / "bte.csv"),
                "--output", str(tmp_path / "w.csv"), "--quiet"]) == 2
    assert "none of the models has a BTE prior" in capsys.readouterr().err
