"""`paraisite predict`: ensembles, bad structures flagged, equality with the LightningModule, output formats."""

import csv
import json
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pymatgen.core import Lattice, Structure

from paraisite.cli import main as cli
from paraisite.data.datamodule import LTCDataModule
from paraisite.evaluate import predict_split
from paraisite.predict import load_ensemble, predict
from tests.conftest import write_records


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
