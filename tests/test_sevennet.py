"""backbone=sevennet: the wheel's weights load exactly (sevenn's own energy), the features are SevenNet's pooled
invariant atom features, cached graphs."""

import csv

import pytest
import torch
from pymatgen.core import Lattice, Structure

from paraisite.cli import main as cli
from paraisite.data.records import Record
from paraisite.models.sevennet import WEIGHTS, AtomGraphSet, SevenNetBackbone, SevenNetFeaturizer, sevennet_model
from paraisite.recipe import build_model
from tests.helpers import compose_cfg, stage

CSCL = Structure(Lattice.cubic(4.1437), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
NACL = Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                                                                [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
NACL_ENERGY = -27.0620  # eV: sevenn 0.13.0's own SevenNetCalculator("7net-0") on NACL


def records_of(structures):
    return [Record(str(i), s.composition.reduced_formula, 1.0, s) for i, s in enumerate(structures)]


@pytest.fixture(scope="module")
def backbone():
    return SevenNetBackbone(WEIGHTS).eval()


@torch.no_grad()
def test_the_weights_load_exactly_and_the_features_are_per_atom(backbone):
    from sevenn import _keys as KEY
    from sevenn.atom_graph_data import AtomGraphData

    full = sevennet_model(WEIGHTS, with_weights=True).eval()
    full.delete_module_by_key("force_output")  # energies only
    graphs = backbone.featurizer().build(records_of([NACL, NACL * (1, 1, 2), CSCL]))
    energy = full(AtomGraphData(**graphs.collate([0, 1]).data))[KEY.PRED_TOTAL_ENERGY]
    assert energy.tolist() == pytest.approx([NACL_ENERGY, 2 * NACL_ENERGY], abs=2e-4)
    features = backbone(graphs.collate([0, 1, 2]))
    assert features.shape == (3, 128) and torch.allclose(features[0], features[1], atol=1e-5)  # a supercell's = its cell's
    assert torch.allclose(backbone(graphs.collate([2])), features[2:], atol=1e-5)  # batching changes nothing
    assert not any(".reduce_" in name or "rescale" in name for name in backbone.state_dict())  # the readout is cut


def test_graphs_are_cached_joined_and_flagged(tmp_path, backbone):
    featurizer = backbone.featurizer()
    assert featurizer.cutoff == 5.0 and featurizer.key("abc") != SevenNetFeaturizer(4.0, featurizer.species).key("abc")
    polonium = Structure(Lattice.cubic(3.35), ["Po"], [[0, 0, 0]])
    graphs = featurizer.build(records_of([CSCL, polonium, NACL]))
    assert graphs.flags == ["", "element_not_in_model: Po", ""]
    featurizer.save(graphs, tmp_path / "g.pt")
    loaded = featurizer.load(tmp_path / "g.pt")
    assert isinstance(loaded, AtomGraphSet) and loaded.ids == graphs.ids
    both = featurizer.concat([graphs, loaded])
    joined, alone = both.collate([0, 5]).data, graphs.collate([0, 2]).data
    assert all(torch.equal(joined[k], alone[k]) for k in alone)


def test_stage_policy_freezes_or_trains_sevennet():
    module = build_model(compose_cfg("backbone=sevennet", "pretrain=scratch", "finetune=dft"), weights=None)
    assert module.backbone.out_dim == 128 and module.backbone.name == "SevenNet 7net-0 (random init)"
    module.start_stage(stage(policy="head"), torch.tensor([1.0, 10.0]))
    assert not any(p.requires_grad for p in module.backbone.parameters())
    module.start_stage(stage(policy="all"), torch.tensor([1.0, 10.0]))
    assert all(p.requires_grad for p in module.backbone.parameters())


@pytest.mark.slow
def test_smoke_run_trains_and_predicts(tmp_path):
    from paraisite.chain import run

    results = run(compose_cfg("backbone=sevennet", "finetune=dft", "datamodule.limit=24"), tmp_path / "run")
    assert results["status"] == "ok" and results["config"]["pretrain"] == "mptrj"
    cif = tmp_path / "NaCl.cif"
    NACL.to(filename=str(cif))
    assert cli(["predict", str(cif), "--run", str(tmp_path / "run"), "--output", str(tmp_path / "p.csv")]) == 0
    (row,) = csv.DictReader(open(tmp_path / "p.csv"))
    assert row["formula"] == "NaCl" and row["flag"] == "" and float(row["kappa_mean"]) >= 0
