"""M3GNet backbone (matgl 4, PyG) with matgl's formation-energy weights from the data folder's `pretrained/`.

Cut like MEGNet, before the last linear layer: 64 features per structure, the second hidden layer (swish) of the
MLP on the set2set readout; the cut layer is kept as buffers (`source_layer`, `source_prediction`).

The published weights (`M3GNet-MP-2018.6.1-Eform`) were trained by matgl's DGL M3GNet, whose node update sums each
bond's message at the bond's destination atom; matgl 4's PyG `M3GNetGraphConv` sums it at the source atom (its
"post-#761" convention). Loaded as is, the weights predict CsCl −1.76 and NaCl −1.86 eV/atom. With the destination
sum (`DestinationSumConv`) they predict CsCl (Pm-3m, a = 4.1437 Å) −2.220 and rock-salt NaCl (Dataset1's
mp-22862) −2.093 eV/atom, against −2.198/−2.245 (two CsCl entries) and −2.105 in the Materials Project
formation-energy table (`composition/mp_e_form.csv`), and 0.027 eV/atom MAE (median 0.019) over the 105
Dataset1/Dataset2 structures whose formula has one entry there (matgl's reported test MAE: 0.019; with the source
sum: 0.23). The state dict loads exactly once DGL's `readout.set2set.lstm.*` is renamed to PyG's `readout.lstm.*`:
no unexpected key, and the only missing ones are the basis cutoffs, buffers that the constructor sets from `cutoff`
(tests/test_m3gnet.py).
"""

from __future__ import annotations

import torch
from matgl.graph._compute import compute_pair_vector_and_distance
from matgl.layers._graph_convolution import M3GNetGraphConv, scatter_add
from torch import nn

from paraisite.contracts import Backbone
from paraisite.data.graphs import ThreeBodyGraphFeaturizer
from paraisite.errors import DataError
from paraisite.models.megnet import load_state, read_model_json

EFORM = "M3GNet-MP-2018.6.1-Eform"
CUTOFF_BUFFERS = {"bond_expansion.rbf.cutoff", "basis_expansion.sbf.cutoff"}  # constants, absent from DGL's state


class DestinationSumConv(M3GNetGraphConv):
    """M3GNet's graph convolution with node messages summed at each edge's destination atom (the published
    weights' convention, see the module docstring)."""

    def node_update_(self, edge_index, edge_feat, node_feat, rbf, u_per_edge, num_nodes):
        src, dst = edge_index[0], edge_index[1]
        inputs = [node_feat[src], node_feat[dst], edge_feat] + ([u_per_edge] if self.include_state else [])
        messages = self.node_update_func(torch.hstack(inputs)) * self.node_weight_func(rbf)
        return scatter_add(messages, dst, dim_size=num_nodes, dim=0)


def published_state(name: str, data_dir: str | None = None) -> dict[str, torch.Tensor]:
    """A published M3GNet state with DGL's set2set key names renamed to matgl 4's PyG ones."""
    return {k.replace("readout.set2set.", "readout."): v for k, v in load_state(name, data_dir).items()}


def load_exactly(model: nn.Module, name: str, data_dir: str | None) -> None:
    """Load a published M3GNet state into matgl 4's PyG model; DataError unless every key matches."""
    missing, unexpected = model.load_state_dict(published_state(name, data_dir), strict=False)
    if unexpected or set(missing) - CUTOFF_BUFFERS:
        raise DataError(f"{name}: state does not match M3GNet (missing {missing}, unexpected {unexpected})")


class M3GNetBackbone(Backbone):
    """Crystal graph with three-body terms → 64 transfer features. `weights`: a matgl M3GNet weight set in the data
    folder's `pretrained/`; None: random init with `architecture`'s shape. `spec` as for MEGNet (constructor
    arguments + source normaliser, stored in every model.pt)."""

    def __init__(self, weights: str | None = EFORM, architecture: str = EFORM, data_dir: str | None = None,
                 spec: dict | None = None):
        super().__init__()
        from matgl.models import M3GNet

        if spec is None or weights:
            args, (mean, std) = read_model_json(weights or architecture, data_dir)
            spec = {"init_args": args, "source_mean": mean, "source_std": std}
        self.spec = spec
        self.source_mean, self.source_std = spec["source_mean"], spec["source_std"]
        self.model = M3GNet(**spec["init_args"])
        for block in self.model.graph_layers:
            c = block.conv
            block.conv = DestinationSumConv(c.include_state, c.edge_update_func, c.edge_weight_func,
                                            c.node_update_func, c.node_weight_func, c.state_update_func)
        if weights:
            load_exactly(self.model, weights, data_dir)
        self.name = weights or f"{architecture} (random init)"
        last = self.model.final_layer.layers[-1]
        self.model.final_layer.layers[-1] = nn.Identity()
        self.register_buffer("source_weight", last.weight.detach().clone())
        self.register_buffer("source_bias", last.bias.detach().clone())
        self._out_dim = last.in_features

    @property
    def out_dim(self) -> int:
        return self._out_dim

    def source_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source_weight, self.source_bias

    def featurizer(self) -> ThreeBodyGraphFeaturizer:
        m = self.model
        return ThreeBodyGraphFeaturizer(float(m.cutoff), tuple(m.element_types), float(m.threebody_cutoff))

    def forward(self, batch) -> torch.Tensor:
        # the cached triplets as matgl's line graph (matgl checks `kept_edge_ids` against the bond lengths)
        _, dist = compute_pair_vector_and_distance(batch.pos, batch.edge_index, batch.pbc_offshift)
        line_graph = {"line_edge_index": batch.triples,
                      "n_triple_ij": torch.bincount(batch.triples[0], minlength=len(dist)),
                      "kept_edge_ids": torch.nonzero(dist <= self.model.threebody_cutoff).squeeze(1)}
        return self.model(batch, l_g=line_graph).reshape(batch.num_graphs, self.out_dim)

    def source_prediction(self, batch) -> torch.Tensor:
        """The pre-trained model's own output (formation energy, eV/atom)."""
        out = nn.functional.linear(self(batch), self.source_weight, self.source_bias).squeeze(-1)
        return out * self.source_std + self.source_mean
