"""Cross-property transfer: composition features, ElemNet, source pre-training cache, transfer modes, predict."""

import csv
import json

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from torch import nn

from paraisite import chain
from paraisite.cli import main as cli
from paraisite.data.composition import ELEMNET_ELEMENTS, CompositionFeaturizer
from paraisite.data.datamodule import LTCDataModule
from paraisite.data.records import Record, read_records
from paraisite.errors import DataError, ParaisiteError
from paraisite.models.elemnet import UPSTREAM_DROPOUTS, ElemNetBackbone
from paraisite.models.features import load_regressor
from paraisite.paths import cache_dir
from paraisite.recipe import build_backbone, build_model, pretrained_weights, stages_of
from tests.helpers import compose_cfg, stage

CROSSPROP = ["backbone=elemnet", "data=crossprop/exfoliation_energy"]


def test_fractions_in_elemnet_order_and_flags():
    assert len(ELEMNET_ELEMENTS) == 86 and ELEMNET_ELEMENTS[:3] == ["H", "Li", "Be"] and ELEMNET_ELEMENTS[-1] == "Pu"
    gaas = Structure(Lattice.cubic(5.65), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    records = [Record("a", "Fe2O3", 1.0), Record("b", "He2O", 2.0), Record("c", "GaAs", None, gaas)]
    data = CompositionFeaturizer().build(records)
    fe, o = ELEMNET_ELEMENTS.index("Fe"), ELEMNET_ELEMENTS.index("O")
    assert data.x[0, fe].item() == pytest.approx(0.4) and data.x[0, o].item() == pytest.approx(0.6)
    assert data.x[0].sum().item() == pytest.approx(1.0)
    assert data.flags == ["", "element_not_in_model: He", ""]
    assert data.x[2, ELEMNET_ELEMENTS.index("Ga")].item() == pytest.approx(0.5)
    assert torch.isnan(data.target[2])


def test_bad_formulas_name_the_offending_token(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("formula,target\nNaCl,-1.5\nXx2O,1\n2-Feb,0.3\nGaAs,nan\n")
    with pytest.raises(DataError) as err:
        read_records(path)
    message = str(err.value)
    assert "unknown element Xx" in message and "'2-Feb' cannot be parsed (2- is an invalid formula!)" in message
    assert "target is nan" in message and "NaCl" not in message  # a negative `target` is fine (not κ)
    assert "datamodule.on_bad=skip" in message


def test_elemnet_architecture_from_config():
    cfg = compose_cfg(*CROSSPROP, "pretrain=scratch")
    backbone = build_backbone(cfg.backbone, None)
    linears = [m for m in backbone.layers if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [1024] * 4 + [512] * 3 + [256] * 3 + [128] * 3 + [64] * 2 + [32]
    assert not any(isinstance(m, nn.Dropout) for m in backbone.layers)  # off by default (conf/backbone/elemnet.yaml)
    upstream = build_backbone(compose_cfg(*CROSSPROP, "pretrain=scratch",
                                          f"backbone.dropouts={list(UPSTREAM_DROPOUTS)}").backbone, None)
    dropouts = [(i, m.p) for i, m in enumerate(upstream.layers) if isinstance(m, nn.Dropout)]
    after = [sum(isinstance(m, nn.Linear) for m in upstream.layers[:i]) for i, _ in dropouts]
    assert after == [4, 7, 10, 13] and [p for _, p in dropouts] == pytest.approx([0.2, 0.1, 0.3, 0.2])
    upstream.truncate(4)  # hidden layer 4 = the last 1024 layer, its dropout kept
    assert upstream.out_dim == 1024 and isinstance(upstream.layers[-1], nn.Dropout)
    module = build_model(cfg, None)  # 17th layer: the linear head
    assert isinstance(module.head.linear, nn.Linear) and module.head.linear.in_features == 32
    other = ElemNetBackbone(widths=[64, 16], depths=[2, 1], dropouts=[0.5, 0.0])
    assert [m.out_features for m in other.layers if isinstance(m, nn.Linear)] == [64, 64, 16]
    other.truncate(2)
    assert other.out_dim == 64 and other.spec["output_layer"] == 2


def source_folders():
    return sorted((cache_dir() / "sources").glob("mp_e_form-*/weights.pt"))


@pytest.fixture(scope="module")
def crossprop_runs(tmp_path_factory):
    """The acceptance command twice (the second reuses the source model), then feature extraction (forest)."""
    root = tmp_path_factory.mktemp("crossprop")
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        import paraisite.source as source

        mp.setenv("PARAISITE_CACHE_DIR", str(root / "cache"))  # no source model another test trained
        before = set(source_folders())
        first = chain.run(compose_cfg(*CROSSPROP, "pretrain=eform", "finetune=dft"), root / "ft1")
        trained = set(source_folders()) - before
        mtime = [p.stat().st_mtime_ns for p in trained]
        mp.setattr(source, "train_source", lambda *a, **k: calls.append(a))
        second = chain.run(compose_cfg(*CROSSPROP, "pretrain=eform", "finetune=dft", "seed=2"), root / "ft2")
        features = chain.run(compose_cfg(*CROSSPROP, "pretrain=eform", "finetune=features"), root / "rf")
    return root, first, second, features, trained, mtime, calls


@pytest.mark.slow
def test_source_model_trained_once_and_reused(crossprop_runs):
    root, first, second, _, trained, mtime, calls = crossprop_runs
    assert len(trained) == 1 and calls == []  # trained by the first run; never again
    assert [p.stat().st_mtime_ns for p in trained] == mtime
    info = json.loads((next(iter(trained)).parent / "source.json").read_text())
    assert info["table"] == "mp_e_form" and info["test"]["n"] > 0 and info["test"]["mae"] > 0
    assert info["split"] == "by formula" and info["rows_per_formula"] == "lowest"  # the ground state per formula
    for results in (first, second):
        assert results["status"] == "ok" and list(results["test"]) == ["exfoliation_energy"]
        metrics = results["test"]["exfoliation_energy"]
        assert {"mae", "rmse", "r2", "spearman", "n"} <= set(metrics) and "mape" not in metrics
        assert "best_val_mae" in results["stages"][0]
    a = torch.load(root / "ft1" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(root / "ft2" / "model.pt", weights_only=True)["state_dict"]
    assert torch.equal(a["backbone.source_weight"], b["backbone.source_weight"])  # the same source model


@pytest.mark.slow
def test_full_finetuning_starts_from_the_source_output_layer():
    cfg = compose_cfg(*CROSSPROP, "pretrain=eform", "finetune=dft")
    module = build_model(cfg, pretrained_weights(cfg))
    assert torch.equal(module.head.linear.weight, module.backbone.source_weight)
    reinit = compose_cfg(*CROSSPROP, "pretrain=eform", "finetune=dft", "stage_overrides.policy=reinit_head")
    assert stages_of(reinit)[0].policy == "reinit_head"


@pytest.mark.slow
def test_feature_extraction_saves_a_scikit_learn_model_and_predicts(crossprop_runs, tmp_path):
    from sklearn.ensemble import RandomForestRegressor

    root, *_ = crossprop_runs
    run_dir = root / "rf"
    regressor = load_regressor((run_dir / "regressor" / "features.skops").read_bytes())
    assert isinstance(regressor, RandomForestRegressor) and regressor.n_features_in_ == 32
    inputs = tmp_path / "formulas.csv"
    inputs.write_text("id,formula\na,MoS2\nb,Xx2O\nc,He2O\nd,2-Feb\ne,Bi2Te3\n")
    assert cli(["predict", str(inputs), "--run", str(run_dir), "--output", str(tmp_path / "p.csv")]) == 0
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "p.csv"))}
    assert rows["a"]["formula"] == "MoS2" and rows["e"]["formula"] == "Bi2Te3"
    assert rows["b"]["flag"] == "parse_error: formula 'Xx2O': unknown element Xx"
    assert rows["c"]["flag"] == "element_not_in_model: He"
    assert rows["d"]["flag"].startswith("parse_error: formula '2-Feb' cannot be parsed (2- is")

    # the same numbers as the fitted scikit-learn model on the run's own features
    cfg = compose_cfg(*CROSSPROP, "pretrain=eform")
    module = build_model(cfg, pretrained_weights(cfg))
    state = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    module.backbone.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")})
    module.transform.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("transform.")})
    x = CompositionFeaturizer().build([Record("a", "MoS2", None), Record("e", "Bi2Te3", None)])
    with torch.no_grad():
        z = regressor.predict(module.backbone.eval()(x.collate([0, 1])).double().numpy())
    expected = module.transform.decode(torch.as_tensor(z)).numpy()
    got = [float(rows["a"]["prediction"]), float(rows["e"]["prediction"])]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_ridge_on_an_inner_layer(tmp_path):
    cfg = compose_cfg(*CROSSPROP, "pretrain=scratch", "finetune=features", "stage_overrides.regressor=ridge",
                      "stage_overrides.features_layer=13")
    results = chain.run(cfg, tmp_path / "ridge")
    assert results["stages"][0]["n_features"] == 128 and results["stages"][0]["regressor"] == "ridge"
    config = torch.load(tmp_path / "ridge" / "model.pt", weights_only=True)["config"]
    assert config["backbone"]["spec"]["output_layer"] == 13
    assert cli(["predict", "--run", str(tmp_path / "ridge"), "--output", str(tmp_path / "p.csv"),
                str(write_csv(tmp_path / "in.csv", ["NaCl", "GaAs"]))]) == 0
    assert [r["flag"] for r in csv.DictReader(open(tmp_path / "p.csv"))] == ["", ""]


def write_csv(path, formulas):
    path.write_text("formula\n" + "\n".join(formulas) + "\n")
    return path


def test_untrusted_types_in_a_regressor_file_are_refused():
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    data = sio.dumps(FunctionTransformer(func=eval))
    with pytest.raises(ParaisiteError, match="refusing to load types"):
        load_regressor(data)


def test_elemnet_on_ltc_reads_agl_by_composition():
    dm = LTCDataModule("agl", CompositionFeaturizer(), seed=1, limit=200)
    dm.setup()
    assert dm.data.ids[0].startswith("agl_composition:")
    structures = LTCDataModule("dataset1", CompositionFeaturizer(), seed=1)
    structures.setup()  # a structure dataset: the composition of each structure
    assert len(structures.data) == 95 and not any(structures.data.flags)


def test_features_stage_must_be_last():
    cfg = compose_cfg("backbone=elemnet", "pretrain=scratch", "finetune=agl_dft", "stage_overrides.policy=features")
    with pytest.raises(ParaisiteError, match="must be the last stage"):
        stages_of(cfg)


def test_unknown_crossprop_set_and_non_positive_kappa_are_clear_errors():
    from paraisite.data.datasets import sources_of
    from paraisite.models.heads import LinearHead
    from paraisite.models.regressor import TransferRegressor
    from paraisite.target import Target

    with pytest.raises(DataError, match=r"unknown cross-property dataset 'crossprop/nope'.*exfoliation_energy"):
        sources_of("crossprop/nope")
    module = TransferRegressor(ElemNetBackbone(widths=[8], depths=[1], dropouts=[0.0]), LinearHead(8), Target())
    with pytest.raises(ParaisiteError, match=r"κ targets must be > 0; for another property set data.target=generic"):
        module.start_stage(stage(), torch.tensor([1.0, -2.0]))
    generic = TransferRegressor(ElemNetBackbone(widths=[8], depths=[1], dropouts=[0.0]), LinearHead(8), Target("generic", "x", ""))
    generic.start_stage(stage(), torch.tensor([1.0, -2.0]))  # any finite value
    with pytest.raises(ParaisiteError, match="loss=mape needs a positive κ target"):
        generic.start_stage(stage(loss="mape"), torch.tensor([1.0, 2.0]))


@pytest.mark.slow
def test_an_interrupted_source_training_resumes_from_its_latest_checkpoint(crossprop_runs, monkeypatch):
    from paraisite.recipe import source_training
    from paraisite.source import pretrain, read_source_model

    root, _, _, _, trained, _, _ = crossprop_runs
    monkeypatch.setenv("PARAISITE_CACHE_DIR", str(root / "cache"))  # the fixture's, where its source model is
    cfg = compose_cfg(*CROSSPROP, "pretrain=eform")
    folder = next(iter(trained)).parent
    before = read_source_model(folder).state_dict
    assert (folder / "checkpoints" / "latest.ckpt").is_file()
    (folder / "weights.pt").unlink()  # as if killed after its last epoch, before writing the model
    assert pretrain(lambda: build_backbone(cfg.backbone, None), "mp_e_form", source_training(cfg)) == folder
    info = json.loads((folder / "source.json").read_text())
    assert info["resumed_from_epoch"] == info["epochs_run"] > 0  # nothing retrained
    after = read_source_model(folder).state_dict
    assert all(torch.equal(before[k], after[k]) for k in before)
