"""Backbones, head and the regressor."""

import copy
import csv
import dataclasses
import math

import pytest
import torch
from pymatgen.core import Lattice, Structure

from paraisite.data.graphs import GraphSet, build_graphs
from paraisite.models.heads import MLPHead
from paraisite.models.megnet import EFORM, GAP, MEGNetBackbone
from paraisite.models.regressor import TransferRegressor, cosine_decay
from paraisite.recipe import build_model
from tests.helpers import CSCL, compose_cfg, records_of, stage


def batch_of(backbone, structures) -> tuple[GraphSet, object]:
    graphs = build_graphs(records_of(structures), backbone.cutoff, backbone.element_types)
    return graphs, graphs.collate(range(len(structures)))


@torch.no_grad()
def test_eform_backbone_reproduces_cscl_formation_energy():
    backbone = MEGNetBackbone(EFORM).eval()
    _, batch = batch_of(backbone, [CSCL])
    assert backbone.source_prediction(batch).item() == pytest.approx(-1.924, abs=1e-3)
    assert backbone(batch).shape == (1, 16)


@torch.no_grad()
def test_batched_equals_one_by_one():
    backbone = MEGNetBackbone(EFORM).eval()
    nacl = Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4,
                     [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
    _, batch = batch_of(backbone, [CSCL, nacl])
    together = backbone.source_prediction(batch)
    alone = torch.cat([backbone.source_prediction(batch_of(backbone, [s])[1]) for s in (CSCL, nacl)])
    assert torch.allclose(together, alone, atol=1e-5)


@torch.no_grad()
def test_gap_backbone_uses_its_own_cutoff_and_fidelity_state():
    backbone = MEGNetBackbone(GAP).eval()
    assert backbone.cutoff == 5.0 and backbone.ntypes_state == 4
    _, batch = batch_of(backbone, [CSCL])
    assert backbone.state_attr(batch).dtype == torch.long
    gap = backbone.source_prediction(batch).item()
    assert math.isfinite(gap) and gap > 0  # CsCl is an insulator


def test_scratch_has_the_eform_shape_but_other_weights():
    torch.manual_seed(0)
    scratch, eform = MEGNetBackbone(None), MEGNetBackbone(EFORM)
    assert scratch.cutoff == eform.cutoff and scratch.state_dict().keys() == eform.state_dict().keys()
    w = "model.embedding.layer_node_embedding.weight"
    assert not torch.equal(scratch.state_dict()[w], eform.state_dict()[w])


def test_regressor_stage_policies():
    module = TransferRegressor(MEGNetBackbone(EFORM), MLPHead(16, [8]))
    module.start_stage(stage(policy="head"), torch.tensor([1.0, 10.0, 100.0]))
    assert not any(p.requires_grad for p in module.backbone.parameters())
    assert len(module.configure_optimizers()["optimizer"].param_groups) == 1
    before = module.head.net[0].weight.clone()
    module.start_stage(stage(policy="reinit_head", lr=1e-3, backbone_lr_scale=0.1), torch.tensor([1.0, 3.0]))
    assert all(p.requires_grad for p in module.backbone.parameters())
    assert not torch.equal(before, module.head.net[0].weight)
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])


def test_cosine_decay_to_one_percent_over_1000_steps():
    assert cosine_decay(0, 1000, 0.01) == pytest.approx(1.0)
    assert cosine_decay(500, 1000, 0.01) == pytest.approx(0.505)
    assert cosine_decay(1000, 1000, 0.01) == pytest.approx(0.01)
    assert cosine_decay(5000, 1000, 0.01) == pytest.approx(0.01)


def test_warm_up_is_linear_then_the_cosine_starts_at_full_lr():
    assert [cosine_decay(s, 100, 0.1, warmup_steps=4) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])
    assert cosine_decay(104, 100, 0.1, warmup_steps=4) == pytest.approx(0.1)


def test_mape_loss_is_on_the_kappa_scale():
    module = TransferRegressor(MEGNetBackbone(None), MLPHead(16, [8]))
    kappa = torch.tensor([1.0, 10.0, 100.0])
    module.start_stage(stage(loss="mape"), kappa)
    z = module.transform.encode(kappa * 1.5)
    assert module.loss(z, kappa).item() == pytest.approx(0.5, rel=1e-5)


def matgl_features(name: str = EFORM):
    """The reference computation: matgl's own, unmodified MEGNet `name` cut before its last layer."""
    from matgl.models import MEGNet

    from paraisite.models.megnet import load_state, read_model_json

    model = MEGNet(**read_model_json(name)[0])
    model.load_state_dict(load_state(name))
    model.output_proj.layers[-1] = torch.nn.Identity()
    return model


@pytest.mark.parametrize("name", [EFORM, GAP])
def test_features_and_gradients_equal_matgl_own_megnet(mirror_records, name):
    """Our MEGNet (in-place SoftPlus2 + `fast_classes`) computes matgl's own, unmodified one: features within 1e-5 of
    it; every parameter gradient within 2e-5 of its tensor's largest entry from the exact (float64) gradient, the
    accuracy of matgl's own float32 gradients (up to 1.5e-5 off on these 16 structures: float32 vs float32 at 1e-5
    would test summation order, not the computation)."""
    from matgl.layers._activations import SoftPlus2

    from paraisite.models.megnet import fast_classes

    ours, reference = MEGNetBackbone(name), matgl_features(name)
    exact = copy.deepcopy(reference).double()
    kinds = {type(m) for m in ours.model.modules(remove_duplicate=False)}
    assert SoftPlus2 not in kinds and set(fast_classes().values()) <= kinds  # the fast path
    _, batch = batch_of(ours, [Structure.from_dict(r["structure"]) for r in mirror_records[:16]])
    state = ours.state_attr(batch)
    out = ours(batch)
    assert (out - reference(batch, state_attr=state).reshape(out.shape)).abs().max() < 1e-5
    out.square().sum().backward()
    batch64 = dataclasses.replace(batch, pos=batch.pos.double(), pbc_offshift=batch.pbc_offshift.double())
    exact(batch64, state_attr=state.double()).square().sum().backward()
    grads = [(key, p.grad, q.grad) for (key, p), q in zip(ours.model.named_parameters(), exact.parameters(),
                                                             strict=True) if p.requires_grad]
    assert len(grads) > 50
    for key, g, h in grads:
        assert (g - h).abs().max() <= 2e-5 * h.abs().max() + 1e-6, key


def test_stage_optimizer_follows_the_reference_adam(mirror_records):
    """The stage's (fused) Adam takes the steps of the textbook per-parameter Adam, to float rounding."""
    module = TransferRegressor(MEGNetBackbone(EFORM), MLPHead(16, [32]))
    module.start_stage(stage(lr=1e-3, weight_decay=1e-4), torch.tensor([1.0, 10.0, 100.0]))
    twin = copy.deepcopy(module)
    fast = module.configure_optimizers()["optimizer"]
    slow = torch.optim.Adam(twin.parameters(), lr=1e-3, weight_decay=1e-4, foreach=False)
    _, batch = batch_of(module.backbone, [Structure.from_dict(r["structure"]) for r in mirror_records[:8]])
    batch.y = torch.rand(8) + 0.5
    for _ in range(5):
        for m, opt in ((module, fast), (twin, slow)):
            opt.zero_grad()
            m.loss(m(batch), batch.y).backward()
            opt.step()
    for (name, p), q in zip(module.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("backbone, features, name", [("chgnet", 64, "CHGNet 0.3.0 (random init)"),
                                                      pytest.param("sevennet", 128, "SevenNet 7net-0 (random init)",
                                                                   marks=pytest.mark.slow)])
def test_stage_policy_freezes_or_trains_a_potential_backbone(backbone, features, name):
    module = build_model(compose_cfg(f"backbone={backbone}", "pretrain=scratch", "finetune=dft"), weights=None)
    assert module.backbone.out_dim == features and module.backbone.name == name
    module.start_stage(stage(policy="head"), torch.tensor([1.0, 10.0]))
    assert not any(p.requires_grad for p in module.backbone.parameters())
    module.start_stage(stage(policy="all"), torch.tensor([1.0, 10.0]))
    assert all(p.requires_grad for p in module.backbone.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("backbone, default_pretrain", [("m3gnet", "eform"), ("chgnet", "mptrj"), ("sevennet", "mptrj")])
def test_a_backbones_smoke_run_trains_and_predicts(tmp_path, backbone, default_pretrain):
    from paraisite.chain import run
    from paraisite.cli import main as cli

    results = run(compose_cfg(f"backbone={backbone}", "finetune=dft", "datamodule.limit=24"), tmp_path / "run")
    assert results["status"] == "ok" and results["config"]["pretrain"] == default_pretrain
    cif = tmp_path / "CsCl.cif"
    CSCL.to(filename=str(cif))
    assert cli(["predict", str(cif), "--run", str(tmp_path / "run"), "--output", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        (row,) = csv.DictReader(f)
    assert row["formula"] == "CsCl" and row["flag"] == "" and float(row["kappa_mean"]) >= 0
