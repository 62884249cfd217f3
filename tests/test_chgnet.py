"""backbone=chgnet: the wheel's weights load strictly, the features are CHGNet's pooled atom features, cached graphs."""


import pytest
import torch
from pymatgen.core import Lattice, Structure

from paraisite.models.chgnet import WEIGHTS, CHGNetBackbone, CHGNetFeaturizer, CrystalGraphSet, weights_file
from paraisite.models.io import safe_load
from tests.helpers import CSCL, records_of

NACL = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def backbone():
    return CHGNetBackbone(WEIGHTS).eval()


@torch.no_grad()
def test_features_are_chgnets_crystal_features_per_atom(backbone):
    """The full CHGNet, loaded strictly from the same checkpoint: its `crystal_fea` (a sum over atoms) / atoms."""
    from chgnet.model import CHGNet

    checkpoint = safe_load(weights_file(WEIGHTS))["model"]
    full = CHGNet(**checkpoint["model_args"])
    full.load_state_dict(checkpoint["state_dict"])  # strict
    graphs = backbone.featurizer().build(records_of([CSCL, NACL]))
    ours = backbone(graphs.collate([0, 1]))
    reference = full.eval()([full.graph_converter(s) for s in (CSCL, NACL)], task="e", return_crystal_feas=True)
    assert ours.shape == (2, 64) and torch.allclose(ours * torch.tensor([[2.0], [8.0]]), reference["crystal_fea"],
                                                    atol=1e-5)
    assert torch.allclose(backbone(graphs.collate([1])), ours[1:], atol=1e-5)  # batching changes nothing
    assert not any(name.startswith(("model.mlp", "model.site_wise", "model.composition_model"))
                   for name in backbone.state_dict())  # the readout is cut


def test_graphs_are_cached_joined_and_flagged(tmp_path, backbone):
    featurizer = backbone.featurizer()
    assert featurizer == CHGNetFeaturizer(6.0, 3.0, "fast") and featurizer.key("abc") != CHGNetFeaturizer(
        5.0, 3.0).key("abc")
    americium = Structure(Lattice.cubic(5.0), ["Am", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    graphs = featurizer.build(records_of([CSCL, americium, NACL]))
    assert graphs.flags == ["", "element_not_in_model: Am", ""]
    featurizer.save(graphs, tmp_path / "g.pt")
    loaded = featurizer.load(tmp_path / "g.pt")
    assert isinstance(loaded, CrystalGraphSet) and loaded.ids == graphs.ids
    both = featurizer.concat([graphs, loaded])
    assert torch.equal(both.graph(5).atom_graph, graphs.graph(2).atom_graph) and len(both.collate([0, 5]).graphs) == 2
