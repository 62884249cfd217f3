"""backbone=sevennet: the wheel's weights load exactly (sevenn's own energy), the features are SevenNet's pooled
invariant atom features, cached graphs."""

import pytest
import torch
from pymatgen.core import Lattice, Structure

from paraisite.models.sevennet import WEIGHTS, AtomGraphSet, SevenNetBackbone, SevenNetFeaturizer, sevennet_model
from tests.helpers import CSCL, records_of

NACL = Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                                                                [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
NACL_ENERGY = -27.0620  # eV: sevenn 0.13.0's own SevenNetCalculator("7net-0") on NACL


@pytest.fixture(scope="module")
def backbone():
    return SevenNetBackbone(WEIGHTS).eval()


@pytest.mark.slow  # several seconds: left out of the edit loop (make test-fast)
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


@pytest.mark.slow  # loads two weight sets
def test_the_multi_fidelity_potential_predicts_at_its_r2scan_fidelity_and_is_no_backbone():
    """SevenNet-MF-0's r2SCAN head is another energy surface than SevenNet-0's (r2SCAN's energy scale), and it
    relaxes NaCl (5.64 Å given) to a tighter lattice than SevenNet-0, which expands it; a multi-fidelity set is refused
    as a backbone's weights (a backbone has no fidelity input)."""
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    from paraisite.errors import ConfigError, DataError
    from paraisite.models.sevennet import sevennet_calculator

    energies, volumes = {}, {}
    for potential in ("7net-0", "7net-mf-0-r2scan"):
        atoms = AseAtomsAdaptor.get_atoms(NACL)
        atoms.calc = sevennet_calculator(potential)
        energies[potential] = atoms.get_potential_energy()
        atoms.set_constraint(FixSymmetry(atoms))
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=100)
        volumes[potential] = atoms.get_volume() / NACL.volume
    assert energies["7net-0"] == pytest.approx(NACL_ENERGY, abs=2e-4)
    assert energies["7net-mf-0-r2scan"] < NACL_ENERGY - 10  # r2SCAN's energy reference, not PBE's
    assert volumes["7net-0"] > 1.02 and volumes["7net-mf-0-r2scan"] < volumes["7net-0"] - 0.03  # 1.025, 0.976
    with pytest.raises(ConfigError, match="'7net-mf-0' are not a backbone's"):
        SevenNetBackbone("7net-mf-0")
    with pytest.raises(DataError, match="unknown SevenNet potential '7net-mf-0'"):
        sevennet_calculator("7net-mf-0")
