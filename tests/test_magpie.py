"""The physical-attribute baseline: Magpie statistics (matminer's tables), backbone=magpie, regressors and searches."""

import csv

import numpy as np
import pytest
import torch
from pymatgen.core import Composition, Lattice, Structure

from paraisite import chain
from paraisite.cli import main as cli
from paraisite.data.composition import CompositionFeaturizer
from paraisite.data.records import Record
from paraisite.errors import ConfigError
from paraisite.models.features import TRUSTED, load_regressor, make_regressor
from paraisite.models.magpie import MagpieBackbone, MagpieFeaturizer
from paraisite.recipe import build_model, check_config, pretrained_weights
from tests.helpers import compose_cfg

MAGPIE = ["backbone=magpie", "finetune=features", "data=crossprop/slme"]
FORMULAS = ["NaCl", "Fe2O3", "LiFePO4", "CsPbI3", "Al0.5Cu0.25Zn0.25", "MoS2", "Bi2Te3", "SiO2", "U3O8", "Cu"]


def test_featurizer_equals_matminer_element_property_magpie():
    from matminer.featurizers.composition import ElementProperty

    reference = ElementProperty.from_preset("magpie")
    featurizer = MagpieFeaturizer()
    assert featurizer.labels == reference.feature_labels() and len(featurizer.labels) == 132
    gaas = Structure(Lattice.cubic(5.65), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    records = [Record(str(i), f, float(i)) for i, f in enumerate(FORMULAS)] + [Record("s", "GaAs", None, gaas)]
    data = featurizer.build(records)
    expected = np.array([reference.featurize(Composition(f)) for f in [*FORMULAS, "GaAs"]], dtype=float)
    np.testing.assert_allclose(data.x.double().numpy(), expected, rtol=1e-6, atol=1e-4)  # stored as float32
    assert data.flags == [""] * len(records) and torch.isnan(data.target[-1])
    batch = data.collate([0, 2])
    assert batch.x.shape == (2, 132) and batch.x.dtype == torch.float32 and batch.y.tolist() == [0.0, 2.0]
    assert MagpieFeaturizer.by_composition


def test_elements_without_magpie_data_are_flagged_not_imputed():
    data = MagpieFeaturizer().build([Record("a", "He2O", 1.0), Record("b", "NaCl", 2.0), Record("c", "RfO2", 3.0),
                                     Record("d", "ArNe", 4.0)])
    assert data.flags == ["element_not_in_model: He", "", "element_not_in_model: Rf", "element_not_in_model: Ar Ne"]
    assert torch.isfinite(data.x).all() and (data.x[[0, 2, 3]] == 0).all()


def test_own_cache_key():
    magpie, fractions = MagpieFeaturizer(), CompositionFeaturizer()
    assert magpie.key("abc") != fractions.key("abc")
    assert magpie.key("abc") != magpie.key("abd") != MagpieFeaturizer(properties=("Number",)).key("abc")
    assert magpie.key("abc", "limit=40") != magpie.key("abc")


def test_backbone_has_no_weights_and_standardises_by_element_table():
    backbone = MagpieBackbone()
    assert backbone.out_dim == 132 and list(backbone.parameters()) == []
    data = MagpieFeaturizer().build([Record("a", f, 1.0) for f in FORMULAS])
    out = backbone(data.collate(range(len(FORMULAS))))
    assert out.shape == (len(FORMULAS), 132) and out.abs().max() < 20  # O(1) features
    np.testing.assert_allclose(out.numpy(), ((data.x - backbone.shift) / backbone.scale).numpy())
    stats = backbone.spec["stats"]
    assert (backbone.shift.reshape(22, 6)[:, stats.index("range")] == 0).all()
    raw = MagpieBackbone(standardize=False)
    assert torch.equal(raw(data.collate([0, 1])), data.x[:2])
    with pytest.raises(ConfigError, match="no pre-trained weights"):
        MagpieBackbone(weights="mp_e_form")


def test_defaults_to_scratch_and_refuses_pretraining():
    assert compose_cfg(*MAGPIE).pretrain.name == "scratch"
    with pytest.raises(ConfigError, match="no weights for pretrain=eform"):
        pretrained_weights(compose_cfg(*MAGPIE, "pretrain=eform"))


@pytest.fixture(scope="module")
def magpie_run(tmp_path_factory):
    """The README's acceptance command: backbone=magpie finetune=features data=crossprop/slme experiment=smoke."""
    run_dir = tmp_path_factory.mktemp("magpie") / "rf"
    return run_dir, chain.run(compose_cfg(*MAGPIE), run_dir)


def test_features_run_and_predict_equal_the_regressor_on_the_features(magpie_run, tmp_path):
    run_dir, results = magpie_run
    stage = results["stages"][0]
    assert results["status"] == "ok" and results["config"]["pretrain"] == "scratch"
    assert stage["regressor"] == "random_forest" and stage["n_features"] == 132 and "search" not in stage
    inputs = tmp_path / "formulas.csv"
    inputs.write_text("id,formula\na,MoS2\nb,He2O\nc,Bi2Te3\nd,NaCl\n")
    assert cli(["predict", str(inputs), "--run", str(run_dir), "--output", str(tmp_path / "p.csv"), "--quiet"]) == 0
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "p.csv"))}
    assert rows["b"]["flag"] == "element_not_in_model: He" and rows["b"]["prediction"] == ""

    regressor = load_regressor((run_dir / "regressor" / "features.skops").read_bytes())
    module = build_model(compose_cfg(*MAGPIE), None)
    state = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    module.transform.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("transform.")})
    data = MagpieFeaturizer().build([Record(i, f, None) for i, f in [("a", "MoS2"), ("c", "Bi2Te3"), ("d", "NaCl")]])
    z = regressor.predict(MagpieBackbone()(data.collate([0, 1, 2])).double().numpy())
    expected = module.transform.decode(torch.as_tensor(z)).numpy()
    got = [float(rows[i]["prediction"]) for i in "acd"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_network_stage_trains_the_head_only(tmp_path):
    cfg = compose_cfg("backbone=magpie", "finetune=dft", "data=crossprop/slme")
    module = build_model(cfg, None)
    module.start_stage(check_config(cfg)[0], torch.tensor([1.0, 2.0]))
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert len(groups) == 1 and sum(p.numel() for p in groups[0]["params"]) == 133  # linear head 132 → 1
    results = chain.run(cfg, tmp_path / "dft")
    assert results["status"] == "ok" and results["stages"][0]["epochs_run"] == 2


def test_hist_gradient_boosting_round_trips_through_skops():
    import skops.io as sio

    x, y = np.random.default_rng(0).normal(size=(200, 5)), np.arange(200.0)
    model = make_regressor("hist_gradient_boosting", seed=1).fit(x, y)
    data = sio.dumps(model)
    assert set(sio.get_untrusted_types(data=data)) <= set(TRUSTED)
    np.testing.assert_array_equal(load_regressor(data).predict(x), model.predict(x))


def test_search_keeps_the_best_validation_candidate(tmp_path):
    cfg = compose_cfg(*MAGPIE, "stage_overrides.regressor=random_forest_search", "datamodule.limit=120")
    stage = chain.run(cfg, tmp_path / "search")["stages"][0]
    search = stage["search"]
    assert search["model"] == "random_forest" and len(search["candidates"]) == 6
    scores = [c["val_mae"] for c in search["candidates"]]
    assert search["best_val_mae"] == min(scores) == pytest.approx(stage["best_val_mae"])
    assert search["best_params"] == search["candidates"][scores.index(min(scores))]["params"]
    regressor = load_regressor((tmp_path / "search" / "regressor" / "features.skops").read_bytes())
    assert {k: regressor.get_params()[k] for k in search["best_params"]} == search["best_params"]


def test_search_refused_when_validation_is_the_test_split():
    with pytest.raises(ConfigError, match="protocol=paper"):
        check_config(compose_cfg(*MAGPIE, "stage_overrides.regressor=hgb_search", "protocol=paper"))
    with pytest.raises(ConfigError, match="regressor='boosting'"):
        check_config(compose_cfg(*MAGPIE, "stage_overrides.regressor=boosting"))


def test_matminer_pin_is_installed_and_in_make_setup():
    import tomllib
    from importlib.metadata import version

    from tests.conftest import ROOT

    pin = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["paraisite"]["no-deps"]
    assert pin == [f"matminer=={version('matminer')}"]
    assert f"--no-deps {pin[0]}" in (ROOT / "Makefile").read_text()
