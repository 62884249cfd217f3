"""CHGNet backbone: the pinned `chgnet` package, with the pre-trained weights its wheel ships (read without unpickling).

The backbone output is CHGNet's crystal-level feature vector: the 64 atom features after the last convolution and
the readout layer norm, averaged over the atoms of the structure (CHGNet's own `crystal_fea` is their sum, which
would grow with the cell; its energy is the mean over atoms of the readout MLP). The readout MLP, the magnetic-moment
head and the composition reference energies are dropped after the weights load (strictly: every key).
Graphs come from CHGNet's `CrystalGraphConverter` and are cached per dataset like matgl's graphs (`CrystalGraphSet`:
each field of CHGNet's `CrystalGraph` concatenated over the structures, plus per-structure offsets).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import torch

from paraisite.contracts import Backbone
from paraisite.data.graphs import NO_NEIGHBORS, NO_STRUCTURE
from paraisite.data.ragged import RaggedFeaturizer, RaggedSet
from paraisite.data.records import ELEMENT_NOT_IN_MODEL, Record
from paraisite.errors import DataError
from paraisite.models.io import safe_load

WEIGHTS = "0.3.0"
CACHE_FORMAT = 1
FIELDS = ("atomic_number", "atom_frac_coord", "atom_graph", "neighbor_image", "directed2undirected",
          "undirected2directed", "bond_graph", "lattice")  # the tensors of a chgnet CrystalGraph
ROW_SHAPES = {"atom_graph": (2,), "neighbor_image": (3,), "bond_graph": (5,)}
MAX_Z = 94  # CHGNet's atom embedding covers H..Pu


def weights_file(version: str) -> Path:
    """The checkpoint of a weight set shipped in the chgnet package (`chgnet/pretrained/<version>/`)."""
    found = sorted(Path(str(resources.files("chgnet") / "pretrained" / version)).glob("*.pth.tar"))
    if not found:
        raise DataError(f"the installed chgnet package has no pretrained weights {version!r}")
    return found[0]


def unusable(rec: Record) -> str:
    """Why CHGNet cannot take `rec` (no structure, an element beyond Pu), or "" when it can."""
    if rec.structure is None:
        return NO_STRUCTURE
    heavy = sorted({el.symbol for el in rec.structure.composition.elements if el.Z > MAX_Z})
    return f"{ELEMENT_NOT_IN_MODEL}: {' '.join(heavy)}" if heavy else ""


def chgnet_model(model_args: dict, state_dict: dict | None = None):
    """A CHGNet of `model_args`'s shape; with `state_dict`'s weights (strict: every key matches) or random ones."""
    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its parameter count
        model = CHGNet(**model_args)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def load_chgnet(version: str = WEIGHTS):
    """The whole CHGNet model (readout included) of a weight set shipped in the chgnet package, read without
    unpickling."""
    checkpoint = safe_load(weights_file(version), "CHGNet checkpoint")["model"]
    return chgnet_model(checkpoint["model_args"], checkpoint["state_dict"])


@dataclass
class CrystalGraphBatch:
    graphs: list  # chgnet CrystalGraphs
    y: torch.Tensor
    fidelity: torch.Tensor | None = None  # the Batch contract's; CHGNet takes no fidelity (always None)


@dataclass
class CrystalGraphSet(RaggedSet):
    """CHGNet graphs of one dataset: each field of CHGNet's CrystalGraph, per structure (`RaggedSet`)."""

    cutoffs: list[float]  # atom graph, bond graph (Å)

    def graph(self, i: int):
        from chgnet.graph import CrystalGraph

        return CrystalGraph(**{f: self.rows(f, i) for f in self.tensors}, atom_graph_cutoff=self.cutoffs[0],
                            bond_graph_cutoff=self.cutoffs[1])

    def collate(self, indices) -> CrystalGraphBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return CrystalGraphBatch([self.graph(i) for i in idx.tolist()], self.target[idx].float())


@dataclass
class CHGNetFeaturizer(RaggedFeaturizer):
    """Structures → CHGNet crystal graphs (atom graph within `atom_graph_cutoff`, bond graph within
    `bond_graph_cutoff`); the settings are part of the cache key."""

    atom_graph_cutoff: float
    bond_graph_cutoff: float
    algorithm: str = "fast"
    by_composition: ClassVar[bool] = False
    set_class: ClassVar[type] = CrystalGraphSet
    cache_format: ClassVar[int] = CACHE_FORMAT

    def key(self, content_hash: str, extra: str = "") -> str:
        text = (f"chgnet|{CACHE_FORMAT}|{content_hash}|{float(self.atom_graph_cutoff)}|"
                f"{float(self.bond_graph_cutoff)}|{self.algorithm}|{extra}")
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def build(self, records: list[Record]) -> CrystalGraphSet:
        from chgnet.graph import CrystalGraphConverter

        converter = CrystalGraphConverter(atom_graph_cutoff=self.atom_graph_cutoff,
                                          bond_graph_cutoff=self.bond_graph_cutoff, algorithm=self.algorithm,
                                          on_isolated_atoms="ignore")
        parts, flags = {f: [] for f in FIELDS}, []
        for rec in records:
            flag = unusable(rec)
            graph = None if flag else converter(rec.structure)
            for f in FIELDS:  # empty adjacency lists keep their row width, so the graphs concatenate
                tensor = None if graph is None else getattr(graph, f).detach()
                parts[f].append(tensor.reshape(-1, *ROW_SHAPES[f]) if f in ROW_SHAPES and tensor is not None
                                else tensor)
            if not flag:
                flag = NO_NEIGHBORS if len(rec.structure) > len(torch.unique(parts["atom_graph"][-1][:, 0])) else ""
            flags.append(flag)
        return CrystalGraphSet.of(records, flags, parts, {f: torch.zeros(0) for f in FIELDS},
                                  cutoffs=[float(self.atom_graph_cutoff), float(self.bond_graph_cutoff)])


class CHGNetBackbone(Backbone):
    """CHGNet crystal graph → 64 crystal features (module docstring). `weights`: a weight set shipped in the chgnet
    package (`0.3.0`); None: random init with `architecture`'s shape. `spec` (CHGNet's constructor arguments, stored
    in every model.pt) rebuilds the network without the weights file."""

    def __init__(self, weights: str | None = WEIGHTS, architecture: str = WEIGHTS, spec: dict | None = None):
        super().__init__()
        from chgnet.model.layers import GraphPooling

        checkpoint = None
        if spec is None or weights:
            checkpoint = safe_load(weights_file(weights or architecture), "CHGNet checkpoint")["model"]
            spec = {"model_args": checkpoint["model_args"]}
        self.spec = spec
        self.model = chgnet_model(spec["model_args"], checkpoint["state_dict"] if weights else None)
        self.model.mlp = self.model.site_wise = self.model.composition_model = None  # the readout is cut
        self.pooling = GraphPooling(average=True)
        self.name = f"CHGNet {weights}" if weights else f"CHGNet {architecture} (random init)"

    @property
    def out_dim(self) -> int:
        return self.model.atom_fea_dim

    def featurizer(self) -> CHGNetFeaturizer:
        args = self.spec["model_args"]
        return CHGNetFeaturizer(float(args["atom_graph_cutoff"]), float(args["bond_graph_cutoff"]),
                                args.get("graph_converter_algorithm", "fast"))

    def forward(self, batch: CrystalGraphBatch) -> torch.Tensor:
        """CHGNet's `_compute` (chgnet 0.4.2) up to the readout, then the mean over each structure's atoms."""
        from chgnet.model.model import BatchedGraph

        m = self.model
        g = BatchedGraph.from_graphs(batch.graphs, m.bond_basis_expansion, m.angle_basis_expansion)
        atoms = m.atom_embedding(g.atomic_numbers - 1)
        bonds = m.bond_embedding(g.bond_bases_ag)
        bond_weights_bg = m.bond_weights_bg(g.bond_bases_bg)
        angles = m.angle_embedding(g.angle_bases) if len(g.angle_bases) else None
        atom_graph = dict(bond_weights=m.bond_weights_ag(g.bond_bases_ag), atom_graph=g.batched_atom_graph,
                          directed2undirected=g.directed2undirected)
        for atom_layer, bond_layer, angle_layer in zip(m.atom_conv_layers[:-1], m.bond_conv_layers, m.angle_layers):
            atoms = atom_layer(atom_feas=atoms, bond_feas=bonds, **atom_graph)
            if angles is not None and bond_layer is not None:
                bonds = bond_layer(atom_feas=atoms, bond_feas=bonds, bond_weights=bond_weights_bg, angle_feas=angles,
                                   bond_graph=g.batched_bond_graph)
                if angle_layer is not None:
                    angles = angle_layer(atom_feas=atoms, bond_feas=bonds, angle_feas=angles,
                                         bond_graph=g.batched_bond_graph)
        atoms = m.atom_conv_layers[-1](atom_feas=atoms, bond_feas=bonds, **atom_graph)
        if m.readout_norm is not None:
            atoms = m.readout_norm(atoms)
        return self.pooling(atoms, g.atom_owners)
