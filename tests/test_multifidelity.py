"""The multi-fidelity chain: refusals, the fidelity state, the target set's splits equal to Step III's, the leakage
filter across fidelities, a smoke run scored like Step III and predicted with the high (DFT) fidelity."""

import csv
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch
from matgl.config import DEFAULT_ELEMENTS

from paraisite.chain import leakage_exclusions, run, stage_data
from paraisite.cli import main as cli
from paraisite.contracts import HIGH_FIDELITY, LOW_FIDELITY
from paraisite.data.datamodule import LTCDataModule
from paraisite.data.graphs import GraphFeaturizer
from paraisite.errors import ConfigError
from paraisite.models.heads import MLPHead
from paraisite.models.megnet import EFORM, GAP, MEGNetBackbone
from paraisite.models.regressor import TransferRegressor
from paraisite.predict import load_ensemble
from paraisite.recipe import check_config, check_overrides, stages_of
from tests.conftest import write_records
from tests.helpers import cfg_of, compose_cfg, stage
from tests.test_models import CSCL, batch_of

FEATURIZER = GraphFeaturizer(4.0, DEFAULT_ELEMENTS)


def test_the_chain_is_one_stage_on_two_fidelities():
    (mf,) = stages_of(cfg_of("finetune=multifidelity", "data=mix",
                             "finetune.stages.multifidelity.low_fidelity_weight=0.5"))
    assert (mf.data, mf.low_fidelity, mf.low_fidelity_weight, mf.datasets) == ("mix", "agl", 0.5, ("mix", "agl"))
    assert (mf.epochs, mf.batch_size) == (60, 32)
    assert stages_of(compose_cfg("finetune=multifidelity"))[0].epochs == 2  # stage_overrides still win
    check_overrides(["finetune.stages.multifidelity.low_fidelity=agl", "stage_overrides.low_fidelity_weight=2"])
    with pytest.raises(ConfigError, match="low_fidelity_weight=-1"):
        stages_of(cfg_of("finetune=multifidelity", "stage_overrides.low_fidelity_weight=-1"))


@pytest.mark.parametrize("overrides,message", [
    (["backbone=elemnet"], "backbone elemnet cannot take a record's fidelity as a state"),
    (["backbone=magpie"], "backbone magpie cannot take a record's fidelity as a state"),
    (["data=agl"], "the low-fidelity set overlaps the stage's data agl"),
    (["+finetune.stages.multifidelity.policy=features"], "policy=features fits a regressor without the fidelity"),
])
def test_what_cannot_train_on_two_fidelities_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_cfg("finetune=multifidelity", *overrides))


@torch.no_grad()
def test_the_fidelity_is_megnets_state():
    eform = MEGNetBackbone(EFORM).eval()
    _, batch = batch_of(eform, [CSCL, CSCL])
    default = eform(batch)  # no fidelity: high, Eform's pre-trained zero state
    assert torch.equal(eform.state_attr(batch), torch.zeros(2, 2))
    batch.fidelity = torch.tensor([HIGH_FIDELITY, LOW_FIDELITY])
    assert torch.equal(eform.state_attr(batch), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    both = eform(batch)
    assert torch.equal(both[0], default[0]) and not torch.allclose(both[1], default[1])
    gap = MEGNetBackbone(GAP).eval()
    _, batch = batch_of(gap, [CSCL, CSCL])
    batch.fidelity = torch.tensor([HIGH_FIDELITY, LOW_FIDELITY])
    assert gap.state_attr(batch).tolist() == [0, 1]  # BandGap-mfi's PBE and GLLB-SC embeddings
    with pytest.raises(ConfigError, match="two different state slots in 0..3"):
        MEGNetBackbone(GAP, fidelity=1, low_fidelity_state=1)


def test_low_fidelity_loss_terms_are_weighted():
    module = TransferRegressor(MEGNetBackbone(None), MLPHead(16, [8]))
    module.start_stage(stage(low_fidelity_weight=0.25), torch.tensor([1.0, 10.0]))
    z, target = torch.tensor([0.3, -0.2, 0.1]), torch.tensor([2.0, 3.0, 4.0])
    terms = torch.stack([module.loss(z[i:i + 1], target[i:i + 1]) for i in range(3)])
    fidelity = torch.tensor([HIGH_FIDELITY, LOW_FIDELITY, HIGH_FIDELITY])
    weighted = module.loss(z, target, fidelity)
    assert weighted == pytest.approx(float((terms * torch.tensor([1, 0.25, 1])).mean()))


def split_ids(dm, part=None):
    keep = None if part is None else (dm.fidelity == part)
    return {name: sorted(dm.data.ids[i] for i in idx if keep is None or keep[i]) for name, idx in dm.splits.items()}


@pytest.mark.parametrize("protocol,fold", [("holdout", None), *(("cv", k) for k in range(5))])
def test_the_target_sets_splits_are_step3s(protocol, fold):
    """Seed and fold alike, the multi-fidelity stage trains, validates and tests on exactly the records Step III's
    DFT stage does, and on the AGL records its AGL stage trains on: a paired comparison is valid."""
    datamodule = partial(LTCDataModule, featurizer=FEATURIZER, seed=3, protocol=protocol, fold=fold, limit=40)
    (mf,) = stages_of(compose_cfg("finetune=multifidelity"))
    agl, dft = stages_of(compose_cfg("finetune=agl_dft"))
    dms = {s.name: stage_data(s, datamodule, leakage_exclusions(s, datamodule), "carved") for s in (mf, agl, dft)}
    for dm in dms.values():
        dm.setup()
    ours, step3 = split_ids(dms["multifidelity"], HIGH_FIDELITY), split_ids(dms["dft"])
    assert ours == step3 and ours["test"] and split_ids(dms["multifidelity"])["val"] == step3["val"]
    low = split_ids(dms["multifidelity"], LOW_FIDELITY)
    assert low["train"] == split_ids(dms["agl"])["train"] and not low["val"] and not low["test"]
    batch = next(iter(dms["multifidelity"].loader("train", batch_size=1000)))
    assert (batch.fidelity == LOW_FIDELITY).sum() == dms["multifidelity"].n_low_fidelity == len(low["train"])


def test_no_low_fidelity_twin_of_a_target_test_material_trains(tmp_path, mirror_records):
    """A target file and a low-fidelity file holding the same materials (other ids, other orders, so every split
    differs, also from Dataset1's): the twins of the target's test materials never train."""
    rows = mirror_records[:40]
    high = write_records(tmp_path / "high.json", [dict(rows[i], id=f"high-{i}") for i in range(1, 40, 2)])
    low = write_records(tmp_path / "low.json", [dict(r, id=f"low-{r['id']}") for r in rows[::-1]])
    datamodule = partial(LTCDataModule, featurizer=FEATURIZER, seed=5)
    mf = replace(stages_of(compose_cfg("finetune=multifidelity"))[0], data=str(high), low_fidelity=str(low))
    dm = stage_data(mf, datamodule, leakage_exclusions(mf, datamodule), "carved")
    dm.setup()
    test = {dm.data.formulas[i] for i in dm.splits["test"]}
    trained = {dm.data.formulas[i] for i in dm.splits["train"] if dm.fidelity[i] == LOW_FIDELITY}
    assert test and trained and not trained & test and dm.low.n_excluded > 0


def read_predictions(folder):
    with open(folder / "test_predictions.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [{}, {"protocol": "cv", "folds": 3, "fold": 1}], ids=["holdout", "cv"])
def test_a_smoke_run_is_scored_like_step3_and_predicts_with_the_dft_fidelity(tmp_path, mirror_records, protocol):
    overrides = [f"{'datamodule.' if k == 'folds' else ''}{k}={v}" for k, v in protocol.items()]
    results = run(compose_cfg("finetune=multifidelity", *overrides), tmp_path / "mf")
    step3 = run(compose_cfg("finetune=agl_dft", *overrides), tmp_path / "step3")
    (stage_result,) = results["stages"]
    assert stage_result["low_fidelity"] == "agl" and 0 < stage_result["n_train_low_fidelity"] < stage_result["n_train"]
    assert stage_result["n_val"] == step3["stages"][1]["n_val"]
    rows = read_predictions(tmp_path / "mf")
    assert sorted((r["test_set"], r["id"], r["fold"]) for r in rows) == \
        sorted((r["test_set"], r["id"], r["fold"]) for r in read_predictions(tmp_path / "step3"))
    assert set(results["test"]) == {"dataset1", "dataset2", "mix", "agl"}

    by_id = {r["id"]: r for r in mirror_records}
    scored = {r["id"]: float(r["prediction"]) for r in rows if r["test_set"] == "dataset1"}
    inputs = write_records(tmp_path / "test.json", [by_id[i] for i in scored])
    assert cli(["predict", str(inputs), "--run", str(tmp_path / "mf"), "--output", str(tmp_path / "p.csv"),
                "--quiet"]) == 0
    with open(tmp_path / "p.csv") as f:
        predicted = {r["id"]: float(r["kappa_mean"]) for r in csv.DictReader(f)}
    assert predicted == pytest.approx(scored, rel=1e-5)
    (member,) = load_ensemble([tmp_path / "mf"])  # the high fidelity predicts, the low one differs
    dm = LTCDataModule("dataset1", member.featurizer, seed=1, limit=40, **protocol)
    dm.setup()
    batch = dm.data.collate(dm.splits["test"].tolist())
    with torch.no_grad():
        batch.fidelity = torch.full((batch.num_graphs,), HIGH_FIDELITY)
        high = member.module.predict_target(batch).numpy()
        batch.fidelity = torch.full((batch.num_graphs,), LOW_FIDELITY)
        low = member.module.predict_target(batch).numpy()
    ids = [dm.data.ids[i] for i in dm.splits["test"]]
    np.testing.assert_allclose([predicted[i] for i in ids], high, rtol=1e-5)
    assert not np.allclose(high, low)
