"""The phonon-BTE κ of a table as a network input (`backbone=megnet_bte`)."""

import csv
import math

import pytest
import torch
from omegaconf import OmegaConf

from paraisite import chain
from paraisite.cli import main as cli
from paraisite.data.records import Record
from paraisite.errors import ConfigError
from paraisite.models.augmented import PhysicsAugmented
from paraisite.models.phonon_bte import BTE_FORMULA_MISMATCH, BTEDescriptors
from paraisite.recipe import build_model
from tests.helpers import compose_cfg
from tests.test_prior import write_bte_table
from tests.test_quasiharmonic import rocksalt


def test_rows_become_log_kappa_and_indicators_a_wrong_formula_is_flagged_a_missing_row_is_zero(tmp_path, caplog):
    write_bte_table(tmp_path / "t.csv", [("a", "NaCl", 5.0, ""), ("b", "CuCl", 0.4, "imaginary_modes"),
                                         ("c", "BAs", 1e9, "no_scattering"), ("d", "KBr", 2.0, "")])
    data = BTEDescriptors([str(tmp_path / "t.csv")]).featurizer().build(
        [Record("a", "Na2Cl2", 6.0), Record("b", "CuCl", 1.0), Record("c", "BAs", 900.0), Record("d", "NaCl", 6.0),
         Record("e", "MgO", 50.0)])
    torch.testing.assert_close(data.x[:3], torch.tensor([[math.log(5.0), 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    assert data.flags[:3] == ["", "", ""]
    assert data.flags[3].startswith(BTE_FORMULA_MISMATCH) and "KBr" in data.flags[3]
    assert data.flags[4] == "" and not data.x[4].any()
    assert "1 of 5 record(s) are in no BTE table" in caplog.text and ": e" in caplog.text


def test_a_missing_table_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="nothere.csv"):
        BTEDescriptors([str(tmp_path / "nothere.csv")])
    with pytest.raises(ConfigError, match="at least one"):
        BTEDescriptors([])


def test_megnet_bte_joins_the_standardised_descriptors_and_rebuilds_without_the_table(tmp_path):
    from paraisite.models.io import model_file_bytes, read_model_file
    from paraisite.predict import member_of

    table = tmp_path / "t.csv"
    write_bte_table(table, [("mgo", "MgO", 40.0, ""), ("nacl", "NaCl", 0.3, "imaginary_modes")])
    cfg = compose_cfg("backbone=megnet_bte", f"backbone.physics.tables=[{table}]")
    module = build_model(cfg, "MEGNet-MP-2018.6.1-Eform")
    backbone = module.backbone
    assert isinstance(backbone, PhysicsAugmented) and backbone.out_dim == 16 + 4
    data = backbone.featurizer().build([Record("mgo", "MgO", 50.0, rocksalt(4.21, "Mg", "O")),
                                        Record("nacl", "NaCl", 6.5, rocksalt(5.64))])
    batch = data.collate([0, 1])
    out = backbone(batch)
    torch.testing.assert_close(out[:, :16], backbone.inner(batch.inner))
    torch.testing.assert_close(out[:, 16:], torch.tensor([[(math.log(40.0) - math.log(10.0)) / 2, 1, 0, 0],
                                                          [-math.log(10.0) / 2, 0, 1, 0]]))
    (tmp_path / "model.pt").write_bytes(model_file_bytes(module, dict(OmegaConf.to_container(cfg, resolve=True))))
    table.unlink()  # the rows travel in the spec
    config, state = read_model_file(tmp_path / "model.pt")
    member = member_of(config, state, "m", "model.pt")
    torch.testing.assert_close(member.module(batch), module.eval()(batch))
    assert member.module.backbone.featurizer().physics.rows == backbone.featurizer().physics.rows


def test_a_smoke_run_on_the_shipped_tables_predicts_new_structures_with_their_table(tmp_path):
    results = chain.run(compose_cfg("backbone=megnet_bte", "finetune=dft", "datamodule.limit=20",
                                    "evaluate_on=[dataset1]"), tmp_path / "run")
    assert results["status"] == "ok" and results["config"]["backbone"] == "megnet_bte"
    cif = tmp_path / "MgO.cif"
    rocksalt(4.21, "Mg", "O").to(filename=str(cif))
    write_bte_table(tmp_path / "bte.csv", [("elsewhere/MgO.cif", "MgO", 60.0, "")])  # matched by file name

    def predicted(*extra) -> dict:
        assert cli(["predict", str(cif), "--run", str(tmp_path / "run"), "--output", str(tmp_path / "p.csv"),
                    "--quiet", *extra]) == 0
        (row,) = csv.DictReader(open(tmp_path / "p.csv"))
        return row

    without, with_table = predicted(), predicted("--bte", str(tmp_path / "bte.csv"))
    assert without["flag"] == with_table["flag"] == ""
    assert float(with_table["kappa_mean"]) != pytest.approx(float(without["kappa_mean"]), rel=1e-4)
    assert with_table["bte_note"] == "the models' input (no BTE prior)"
