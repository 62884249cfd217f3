"""backbone=quasiharmonic: AGL's Debye–Grüneisen model (Slack's κ) on CHGNet's equation of state."""

import csv
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from pymatgen.core import Lattice, Structure

from paraisite import chain
from paraisite.cli import main as cli
from paraisite.data.records import Record
from paraisite.errors import ConfigError
from paraisite.models.features import load_regressor
from paraisite.models.quasiharmonic import (
    EV_PER_A3, FEATURES, QuasiHarmonicBackbone, QuasiHarmonicFeaturizer, debye_gruneisen, poisson_factor, slack_kappa,
)
from paraisite.recipe import build_model
from tests.helpers import compose_cfg

QH = ["backbone=quasiharmonic", "finetune=features", "stage_overrides.regressor=ridge", "datamodule.limit=20",
      "evaluate_on=[dataset1]"]
ROCKSALT = [[0, 0, 0], [0.5, 0.5, 0.5]]


def rocksalt(a: float, cation: str = "Na", anion: str = "Cl") -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], ROCKSALT)


def birch_murnaghan(v, e0, v0, b0, bp):
    eta = (v0 / v) ** (2 / 3)
    return e0 + 9 * v0 * b0 / 16 * ((eta - 1) ** 3 * bp + (eta - 1) ** 2 * (6 - 4 * eta))


def test_equation_of_state_gives_bulk_modulus_debye_temperature_and_slack_kappa():
    volumes = np.linspace(36.0, 44.0, 9)
    b0 = 50 / (EV_PER_A3 / 1e9)  # 50 GPa in eV/Å³
    q = debye_gruneisen(volumes, birch_murnaghan(volumes, -10.0, 40.0, b0, 4.5), [22.99, 35.45])
    assert q.bulk_modulus_GPa == pytest.approx(50, rel=1e-3) and q.bulk_modulus_derivative == pytest.approx(4.5, 1e-3)
    assert q.volume_per_atom == pytest.approx(20.0, rel=1e-4) and q.atoms_per_cell == 2
    assert q.gamma == pytest.approx(4.5 / 2 - 1 / 6, rel=1e-3)
    assert poisson_factor(0.25) == pytest.approx(0.86, abs=5e-4)  # AGL: f(σ = 0.25) ≈ 0.86
    mass = (22.99 + 35.45) * 1.66053906660e-27
    theta = 1.054571817e-34 / 1.380649e-23 * (6 * math.pi ** 2 * math.sqrt(40e-30) * 2) ** (1 / 3) * 0.859949 \
        * math.sqrt(50e9 / mass)
    assert q.theta_debye == pytest.approx(theta, rel=1e-3) and q.theta_acoustic == pytest.approx(theta / 2 ** (1 / 3))
    assert q.kappa_slack_300K == pytest.approx(slack_kappa(q.theta_acoustic, q.gamma, mass / 2, 20e-30))
    assert q.kappa_slack_gamma2_300K == pytest.approx(slack_kappa(q.theta_acoustic, 2.0, mass / 2, 20e-30))
    # Slack's scaling: κ ∝ θ_a³ at fixed γ, mass and volume; and twice the temperature halves it
    assert slack_kappa(200, 2, 1e-25, 2e-29) / slack_kappa(100, 2, 1e-25, 2e-29) == pytest.approx(8)
    assert slack_kappa(200, 2, 1e-25, 2e-29, temperature=600) == pytest.approx(slack_kappa(200, 2, 1e-25, 2e-29) / 2)
    features = q.features()
    assert len(features) == len(FEATURES) == 10 and features[0] == pytest.approx(math.log(q.kappa_slack_300K))


def test_energies_without_a_minimum_are_refused():
    volumes = np.linspace(36.0, 44.0, 9)
    with pytest.raises(ValueError, match="no energy minimum|equation of state fit failed"):
        debye_gruneisen(volumes, -0.1 * volumes, [22.99, 35.45])


@pytest.mark.slow  # several seconds: left out of the edit loop (make test-fast)
def test_chgnet_equation_of_state_of_rocksalt_and_flags():
    nacl, conventional = rocksalt(5.64), rocksalt(5.64)
    heavy = Structure(Lattice.cubic(5.0), ["Am", "O"], ROCKSALT)
    records = [Record("prim", "NaCl", 6.5, nacl.get_primitive_structure()), Record("conv", "NaCl", 6.5, conventional),
               Record("none", "NaCl", 6.5), Record("am", "AmO", 1.0, heavy)]
    data = QuasiHarmonicFeaturizer().build(records)
    assert data.flags[:2] == ["", ""] and data.flags[2].startswith("no_structure")
    assert data.flags[3] == "element_not_in_model: Am" and (data.x[2:] == 0).all()
    assert data.x.shape == (4, len(FEATURES))
    torch.testing.assert_close(data.x[0], data.x[1], rtol=1e-4, atol=1e-4)  # the primitive cell, whatever the input
    q = dict(zip(FEATURES, data.x[0].tolist()))
    assert 18 < math.exp(q["ln bulk_modulus_GPa"]) < 32  # NaCl: 24 GPa measured
    assert 2.5 < q["bulk_modulus_derivative"] < 6.5 and q["ln atoms_per_cell"] == pytest.approx(math.log(2))
    assert 2 < math.exp(q["ln kappa_slack_300K"]) < 20  # NaCl: 7 W/mK measured
    assert QuasiHarmonicFeaturizer().key("abc") != QuasiHarmonicFeaturizer().key("abd") \
        != QuasiHarmonicFeaturizer().key("abc", "limit=20")


def test_backbone_has_no_weights_and_passes_the_features_through():
    cfg = compose_cfg(*QH)
    assert cfg.pretrain.name == "scratch"
    module = build_model(cfg, None)
    backbone = module.backbone
    assert isinstance(backbone, QuasiHarmonicBackbone) and backbone.out_dim == len(FEATURES)
    assert list(backbone.parameters()) == [] and backbone.spec == {"energy_model": "0.3.0"}
    x = torch.randn(3, len(FEATURES))
    from paraisite.data.composition import CompositionBatch

    assert torch.equal(backbone(CompositionBatch(x, torch.zeros(3))), x)
    with pytest.raises(ConfigError, match="no pre-trained weights"):
        QuasiHarmonicBackbone(weights="0.3.0")


@pytest.mark.slow
def test_features_run_and_predict_equal_the_regressor_on_the_features(tmp_path):
    results = chain.run(compose_cfg(*QH), tmp_path / "run")
    stage = results["stages"][0]
    assert results["status"] == "ok" and stage["regressor"] == "ridge" and stage["n_features"] == len(FEATURES)
    assert np.isfinite(results["test"]["dataset1"]["mape"])
    cif = tmp_path / "MgO.cif"
    rocksalt(4.21, "Mg", "O").to(filename=str(cif))
    assert cli(["predict", str(cif), "--run", str(tmp_path / "run"), "--output", str(tmp_path / "p.csv"),
                "--quiet"]) == 0
    (row,) = csv.DictReader(open(tmp_path / "p.csv"))
    regressor = load_regressor((tmp_path / "run" / "regressor" / "features.skops").read_bytes())
    module = build_model(compose_cfg(*QH), None)
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["state_dict"]
    module.transform.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("transform.")})
    x = QuasiHarmonicFeaturizer().build([Record("m", "MgO", None, rocksalt(4.21, "Mg", "O"))]).x
    expected = module.transform.decode(torch.as_tensor(regressor.predict(x.double().numpy()))).item()
    assert row["flag"] == "" and float(row["kappa_mean"]) == pytest.approx(expected, rel=1e-5)


AUGMENTED = ["backbone=m3gnet_physics", "finetune=dft", "datamodule.limit=20", "evaluate_on=[dataset2]"]


@pytest.mark.slow  # several seconds: left out of the edit loop (make test-fast)
def test_augmented_backbone_joins_inner_and_standardised_physics_features(tmp_path):
    from paraisite.models.augmented import AugmentedFeaturizer, PhysicsAugmented
    from paraisite.models.quasiharmonic import AGL_MEAN, AGL_STD
    from paraisite.models.io import model_file_bytes, read_model_file
    from paraisite.predict import member_of

    cfg = compose_cfg(*AUGMENTED)
    module = build_model(cfg, "M3GNet-MP-2018.6.1-Eform")
    backbone = module.backbone
    assert isinstance(backbone, PhysicsAugmented) and backbone.out_dim == 64 + len(FEATURES)
    assert backbone.source_layer() is None and backbone.spec["physics"] == {"energy_model": "0.3.0"}
    records = [Record("mgo", "MgO", 50.0, rocksalt(4.21, "Mg", "O")), Record("none", "NaCl", 6.5),
               Record("nacl", "NaCl", 6.5, rocksalt(5.64))]
    featurizer = backbone.featurizer()
    assert isinstance(featurizer, AugmentedFeaturizer)
    data = featurizer.build(records)
    assert data.flags[0] == data.flags[2] == "" and data.flags[1].startswith("no_structure")
    key = featurizer.key("abc")
    assert key == f"{featurizer.inner.key('abc')}+{featurizer.physics.key('abc')}"
    featurizer.save(data, tmp_path / f"my-set-{key}.pt")  # each part where its own backbone caches it
    physics = featurizer.physics.load(tmp_path / f"my-set-{featurizer.physics.key('abc')}.pt")
    assert featurizer.inner.load(tmp_path / f"my-set-{featurizer.inner.key('abc')}.pt").ids == data.ids
    loaded = featurizer.load(tmp_path / f"my-set-{key}.pt")
    assert loaded.ids == data.ids and torch.equal(loaded.physics.x, data.physics.x)
    assert torch.equal(physics.x, data.physics.x)
    batch = data.collate([0, 2])
    assert torch.equal(batch.y, torch.tensor([50.0, 6.5]))
    out = backbone(batch)
    torch.testing.assert_close(out[:, :64], backbone.inner(batch.inner))
    expected = (data.physics.x[[0, 2]] - torch.tensor(AGL_MEAN)) / torch.tensor(AGL_STD)
    torch.testing.assert_close(out[:, 64:], expected)
    # a saved model rebuilds from its stored spec alone (no weights file, no data folder) and predicts the same
    (tmp_path / "model.pt").write_bytes(model_file_bytes(module, dict(OmegaConf.to_container(cfg, resolve=True))))
    config, state = read_model_file(tmp_path / "model.pt")
    member = member_of(config, state, "m", "model.pt")
    torch.testing.assert_close(member.module(batch), module.eval()(batch))


@pytest.mark.slow
def test_augmented_smoke_run_trains_and_predicts(tmp_path):
    results = chain.run(compose_cfg(*AUGMENTED), tmp_path / "run")
    assert results["status"] == "ok" and results["config"]["backbone"] == "m3gnet_physics"
    cif = tmp_path / "MgO.cif"
    rocksalt(4.21, "Mg", "O").to(filename=str(cif))
    assert cli(["predict", str(cif), "--run", str(tmp_path / "run"), "--output", str(tmp_path / "p.csv"),
                "--quiet"]) == 0
    (row,) = csv.DictReader(open(tmp_path / "p.csv"))
    assert row["formula"] == "MgO" and row["flag"] == "" and float(row["kappa_mean"]) > 0
