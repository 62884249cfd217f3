"""MEGNet backbone (matgl 4, PyG) with weights from the data folder's `pretrained/<name>/`.

The backbone is MEGNet cut before its last linear layer: 16 features per structure, taken *after* the
SoftPlus2 of the second output block (upstream ParAIsite took them before it; both are defensible).

MEGNet's state input carries a record's fidelity (multi-fidelity stages), as in the BandGap-mfi weights (Chen et al.,
Nat. Comput. Sci. 1, 46 (2021)): a record takes state slot `fidelity` (high fidelity: the target set, and every
prediction) or `low_fidelity_state` (low fidelity). A slot is an index into the fidelity embedding of a multi-fidelity
model (`ntypes_state`: BandGap-mfi's 0 = PBE, 1 = GLLB-SC, 2 = HSE, 3 = SCAN) and, for a model whose state is a vector
of numbers fed to its state encoder (Eform: 2 numbers, zero in pre-training), 0 = the zero vector and k = the k-th
unit vector — so high-fidelity records see exactly the pre-trained state and the low fidelity's shift is learned by
the encoder's first layer, no new parameters either way.
"""

from __future__ import annotations

import functools
import json
import math
import re

import torch
from torch import nn

from paraisite.contracts import LOW_FIDELITY, Backbone
from paraisite.data.graphs import GraphFeaturizer
from paraisite.data.mirror import mirror_file
from paraisite.errors import ConfigError, DataError
from paraisite.models.io import safe_load

EFORM = "MEGNet-MP-2018.6.1-Eform"
GAP = "MEGNet-MP-2019.4.1-BandGap-mfi"


def read_model_json(name: str, data_dir: str | None = None) -> tuple[dict, tuple[float, float]]:
    """(MEGNet constructor args, (target mean, std)) of a published matgl model."""
    path = mirror_file(f"pretrained/{name}/model.json", data_dir)
    try:
        spec = json.loads(path.read_text())["kwargs"]
        args = dict(spec["model"]["init_args"])
        found = re.search(r"Mean=([-\d.eE+]+),\s*Std:\s*([-\d.eE+]+)", spec.get("target_transformer") or "")
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a matgl model.json ({exc})") from None
    return args, (float(found[1]), float(found[2])) if found else (0.0, 1.0)


class SoftPlus2(nn.Module):
    """matgl's SoftPlus2, softplus(x) − log 2, with the shift done in place: the same values and gradients (softplus's
    backward reads its input, not its output) and one tensor fewer per activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x).sub_(math.log(2.0))


def mean_by(x: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Row means of `x` grouped by `index` (0 for an empty group): matgl's `scatter_mean` in fewer ops."""
    total = x.new_zeros(size, x.shape[1]).index_add_(0, index, x)
    return total / torch.bincount(index, minlength=size).clamp_(min=1).unsqueeze(1)


def set2set(lstm: nn.LSTM, x: torch.Tensor, index: torch.Tensor, size: int, steps: int) -> torch.Tensor:
    """The Set2Set readout of PyG (matgl's node readout) and of matgl's edge readout, one algorithm, with the LSTM's
    equations written out: on a batch's few rows one `nn.LSTM` call costs far more than its arithmetic."""
    from torch_geometric.utils import softmax

    h = [x.new_zeros(size, lstm.hidden_size) for _ in lstm.all_weights]  # per LSTM layer
    c, q_star = list(h), x.new_zeros(size, 2 * x.shape[1])
    for _ in range(steps):
        q = q_star
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(lstm.all_weights):
            i, f, g, o = (nn.functional.linear(q, w_ih, b_ih) + nn.functional.linear(h[k], w_hh, b_hh)).chunk(4, 1)
            c[k] = f.sigmoid() * c[k] + i.sigmoid() * g.tanh()
            h[k] = q = o.sigmoid() * c[k].tanh()
        a = softmax((x * q.index_select(0, index)).sum(dim=-1, keepdim=True), index, num_nodes=size)
        q_star = torch.cat([q, x.new_zeros(size, x.shape[1]).index_add_(0, index, a * x)], dim=-1)
    return q_star


@functools.cache
def fast_classes() -> dict[type, type]:
    """matgl's MEGNet layer classes → subclasses with faster forwards: the same parameters, the same numerics."""
    from matgl.layers import EdgeSet2Set, MEGNetGraphConv, Set2SetReadOut

    class FastMEGNetGraphConv(MEGNetGraphConv):
        """matgl's MEGNet convolution (batched graphs) with the edge update's first Linear split by input block,
        W·[vᵢ; vⱼ; eᵢⱼ; u] + b = W_i·vᵢ + W_j·vⱼ + W_e·eᵢⱼ + W_u·u + b: the node and state products are taken per atom
        and per graph and gathered to the edges, instead of gathering all four blocks to every edge and concatenating
        them (a quarter of the multiply-adds per edge). Gathers by `index_select`, whose backward is one `index_add`."""

        def forward(self, edge_index, edge_feat, node_feat, state_feat, node_batch, edge_batch, num_nodes, num_graphs):
            src, dst = edge_index
            linear, first = nn.functional.linear, self.edge_func.layers[0]
            dims = [node_feat.shape[1], node_feat.shape[1], edge_feat.shape[1], state_feat.shape[1]]
            w_i, w_j, w_e, w_u = first.weight.split(dims, dim=1)
            per_atom = linear(node_feat, w_i) + linear(state_feat, w_u).index_select(0, node_batch)
            edge_feat = (linear(edge_feat, w_e, first.bias) + per_atom.index_select(0, src)
                         + linear(node_feat, w_j).index_select(0, dst))
            for layer in self.edge_func.layers[1:]:
                edge_feat = layer(edge_feat)
            u_per_node = state_feat.index_select(0, node_batch)
            node_feat = self.node_func(torch.hstack([node_feat, mean_by(edge_feat, src, num_nodes), u_per_node]))
            means = [mean_by(edge_feat, edge_batch, num_graphs), mean_by(node_feat, node_batch, num_graphs)]
            return edge_feat, node_feat, self.state_func(torch.hstack([state_feat, *means]))

    class FastSet2SetReadOut(Set2SetReadOut):
        """matgl's node readout by `set2set` (PyG's `Aggregation.__call__` supplies `dim_size`)."""

        def forward(self, x, index, ptr, dim_size, dim):
            return set2set(self.lstm, x, index, dim_size, self.n_iters)

    class FastEdgeSet2Set(EdgeSet2Set):
        """matgl's edge readout (batched graphs, every graph with edges) by `set2set`."""

        def forward(self, edge_feat, edge_batch, num_graphs):
            return set2set(self.lstm, edge_feat, edge_batch, num_graphs, self.n_iters)

    return {MEGNetGraphConv: FastMEGNetGraphConv, Set2SetReadOut: FastSet2SetReadOut,
            EdgeSet2Set: FastEdgeSet2Set}


def with_fast_layers(model: nn.Module) -> nn.Module:
    """`model` with every matgl SoftPlus2 replaced by the in-place one above and its other layers switched to
    `fast_classes` (`__class__` only: the same parameters, state_dict keys and weights)."""
    from matgl.layers._activations import SoftPlus2 as MatglSoftPlus2

    for path, child in list(model.named_modules(remove_duplicate=False)):  # one instance sits at many paths
        if isinstance(child, MatglSoftPlus2):
            parent, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent), name, SoftPlus2())
        elif type(child) in fast_classes():
            child.__class__ = fast_classes()[type(child)]
    return model


def load_state(name: str, data_dir: str | None = None) -> dict[str, torch.Tensor]:
    """matgl's `state.pt` (keys prefixed `model.`), loaded without unpickling code."""
    state = safe_load(mirror_file(f"pretrained/{name}/state.pt", data_dir), "matgl state dict")
    return {k.removeprefix("model."): v for k, v in state.items()}


class MEGNetBackbone(Backbone):
    """Crystal graph → 16 transfer features. `weights`: a matgl weight set in the data folder's `pretrained/`;
    None: random init with `architecture`'s shape.

    `spec` (constructor arguments + source normaliser, stored in every model.pt) rebuilds the network without the
    data folder, e.g. on a cluster node that screens structures.
    """

    takes_fidelity = True

    def __init__(self, weights: str | None = EFORM, architecture: str = EFORM, fidelity: int = 0,
                 low_fidelity_state: int = 1, data_dir: str | None = None, spec: dict | None = None):
        super().__init__()
        from matgl.models import MEGNet

        if spec is None or weights:
            args, (mean, std) = read_model_json(weights or architecture, data_dir)
            spec = {"init_args": args, "source_mean": mean, "source_std": std}
        self.spec = spec
        args, self.source_mean, self.source_std = dict(spec["init_args"]), spec["source_mean"], spec["source_std"]
        self.model = with_fast_layers(MEGNet(**args))
        if weights:
            self.model.load_state_dict(load_state(weights, data_dir))
        self.name = weights or f"{architecture} (random init)"
        last = self.model.output_proj.layers[-1]
        self.model.output_proj.layers[-1] = nn.Identity()
        # the source task's output layer is kept (as buffers: never trained) for `source_prediction`
        self.register_buffer("source_weight", last.weight.detach().clone())
        self.register_buffer("source_bias", last.bias.detach().clone())
        self._out_dim = last.in_features
        self.cutoff = float(self.model.cutoff)
        self.element_types = tuple(self.model.element_types)
        self.ntypes_state = args.get("ntypes_state")
        self.dim_state = args.get("dim_state_embedding", 2)
        slots = self.ntypes_state or self.dim_state + 1
        if not (0 <= fidelity < slots and 0 <= low_fidelity_state < slots and fidelity != low_fidelity_state):
            raise ConfigError(f"backbone {self.name}: fidelity={fidelity}, low_fidelity_state={low_fidelity_state} "
                              f"must be two different state slots in 0..{slots - 1}")
        self.fidelity, self.low_fidelity_state = fidelity, low_fidelity_state

    @property
    def out_dim(self) -> int:
        return self._out_dim

    def source_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source_weight, self.source_bias

    def featurizer(self) -> GraphFeaturizer:
        return GraphFeaturizer(self.cutoff, self.element_types)

    def state_attr(self, batch) -> torch.Tensor:
        """The state input of each record: its fidelity's slot (see the module's docstring)."""
        slot = torch.full((batch.num_graphs,), self.fidelity, dtype=torch.long, device=batch.pos.device)
        if batch.fidelity is not None:
            slot = slot.masked_fill(batch.fidelity == LOW_FIDELITY, self.low_fidelity_state)
        if self.ntypes_state:  # an index into the fidelity embedding
            return slot
        return nn.functional.one_hot(slot, self.dim_state + 1)[:, 1:].float()

    def forward(self, batch) -> torch.Tensor:
        out = self.model(batch, state_attr=self.state_attr(batch))
        return out.reshape(batch.num_graphs, self.out_dim)

    def source_prediction(self, batch) -> torch.Tensor:
        """The pre-trained model's own output (e.g. formation energy, eV/atom)."""
        out = nn.functional.linear(self(batch), self.source_weight, self.source_bias).squeeze(-1)
        return out * self.source_std + self.source_mean
