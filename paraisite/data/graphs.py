"""Crystal graphs (matgl's Structure2Graph) packed into one tensor file per dataset, cached on disk.

A `GraphSet` keeps all graphs of a dataset as flat tensors plus per-graph offsets: positions and periodic
shifts are computed once here, so a batch is only slicing and concatenation. A `ThreeBodyGraphSet` (M3GNet) adds
the triplets (pairs of bonds of one atom within the three-body cutoff) the same way. The cache file is keyed by the
source's content hash and the converter settings, written atomically and loaded with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from paraisite.contracts import Featurizer
from paraisite.data.records import ELEMENT_NOT_IN_MODEL, Record
from paraisite.models.io import read_cache, write_cache

CACHE_FORMAT = 2
NO_NEIGHBORS = "no_neighbors_within_cutoff"
NO_STRUCTURE = "no_structure (a graph backbone needs one)"


@dataclass
class GraphBatch:
    """A batch in the layout matgl's PyG models read (node_type, pos, edge_index, pbc_offshift, batch)."""

    node_type: torch.Tensor
    pos: torch.Tensor
    edge_index: torch.Tensor
    pbc_offshift: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    num_graphs: int = field(default=0)
    triples: torch.Tensor | None = None  # (2, T) bond ids (i→j, i→k) in this batch: M3GNet's line graph
    fidelity: torch.Tensor | None = None  # (B,) per record, set by multi-fidelity stages (see contracts.Batch)


@dataclass
class GraphSet:
    """All graphs of one dataset as flat tensors; graph i owns nodes node_ptr[i]:node_ptr[i+1] (same for edges)."""

    ids: list[str]
    formulas: list[str]
    flags: list[str]  # "" when usable, else why the graph cannot be used
    target: torch.Tensor  # (G,) float64, NaN where unknown
    node_type: torch.Tensor
    pos: torch.Tensor
    edge_index: torch.Tensor  # local node indices within each graph
    offshift: torch.Tensor
    node_ptr: torch.Tensor
    edge_ptr: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, indices) -> GraphBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        n0, n1 = self.node_ptr[idx], self.node_ptr[idx + 1]
        e0, e1 = self.edge_ptr[idx], self.edge_ptr[idx + 1]
        n_nodes, n_edges = n1 - n0, e1 - e0
        node_sel, edge_sel = ranges(n0, n_nodes), ranges(e0, n_edges)
        new_start = torch.cumsum(n_nodes, 0) - n_nodes
        shift = torch.repeat_interleave(new_start, n_edges)
        return GraphBatch(
            node_type=self.node_type[node_sel],
            pos=self.pos[node_sel],
            edge_index=self.edge_index[:, edge_sel] + shift,
            pbc_offshift=self.offshift[edge_sel],
            batch=torch.repeat_interleave(torch.arange(len(idx)), n_nodes),
            y=self.target[idx].float(),
            num_graphs=len(idx),
        )


def ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(start, start + count) for each pair, without a Python loop."""
    packed_starts = torch.cumsum(counts, 0) - counts
    return torch.arange(int(counts.sum())) + torch.repeat_interleave(starts - packed_starts, counts)


@dataclass
class ThreeBodyGraphSet(GraphSet):
    """A GraphSet plus M3GNet's triplets; graph i owns triples[:, triple_ptr[i]:triple_ptr[i+1]]."""

    triples: torch.Tensor  # (2, T) bond indices local to each graph: row 0 bond i→j, row 1 bond i→k
    triple_ptr: torch.Tensor

    def collate(self, indices) -> GraphBatch:
        batch = super().collate(indices)
        idx = torch.as_tensor(indices, dtype=torch.long)
        n_edges = self.edge_ptr[idx + 1] - self.edge_ptr[idx]
        n_triples = self.triple_ptr[idx + 1] - self.triple_ptr[idx]
        shift = torch.repeat_interleave(torch.cumsum(n_edges, 0) - n_edges, n_triples)
        batch.triples = self.triples[:, ranges(self.triple_ptr[idx], n_triples)] + shift
        return batch


def triples_of(pos: torch.Tensor, edge_index: torch.Tensor, offshift: torch.Tensor, threebody_cutoff: float):
    """(2, T) pairs of distinct bonds i→j, i→k of one atom, both within `threebody_cutoff` (matgl's line graph)."""
    from matgl.graph._compute import compute_pair_vector_and_distance, create_line_graph

    bond_vec, bond_dist = compute_pair_vector_and_distance(pos, edge_index, offshift)
    return create_line_graph(edge_index, bond_dist, bond_vec, None, len(pos), threebody_cutoff)["line_edge_index"]


def structure_graph(structure, converter) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(node_type, cartesian positions, edge_index, cartesian periodic shift per edge) of one structure."""
    g, lat, _ = converter.get_graph(structure)
    lattice = lat[0].double()
    pos = (g.frac_coords.double() @ lattice).float()
    offshift = (g.pbc_offset.double() @ lattice).float()
    return g.node_type.long(), pos, g.edge_index.long(), offshift


def build_graphs(records: list[Record], cutoff: float, element_types: tuple[str, ...],
                 threebody_cutoff: float | None = None) -> GraphSet:
    """Convert records' structures to graphs (with `threebody_cutoff`: and their triplets, a ThreeBodyGraphSet);
    flag (never drop) those the model cannot use."""
    from matgl.ext.pymatgen import Structure2Graph

    converter = Structure2Graph(element_types=tuple(element_types), cutoff=cutoff)
    known = set(element_types)
    nodes, positions, edges, shifts, n_nodes, n_edges, flags, triples, n_triples = [], [], [], [], [], [], [], [], []
    for rec in records:
        missing = sorted({el.symbol for el in rec.structure.composition.elements} - known) if rec.structure else []
        if rec.structure is None or missing:
            flags.append(f"{ELEMENT_NOT_IN_MODEL}: {' '.join(missing)}" if missing else NO_STRUCTURE)
            n_nodes.append(0)
            n_edges.append(0)
            n_triples.append(0)
            continue
        node_type, pos, edge_index, offshift = structure_graph(rec.structure, converter)
        flags.append("" if edge_index.shape[1] else NO_NEIGHBORS)
        nodes.append(node_type), positions.append(pos), edges.append(edge_index), shifts.append(offshift)
        n_nodes.append(len(node_type))
        n_edges.append(edge_index.shape[1])
        if threebody_cutoff is not None:
            triples.append(triples_of(pos, edge_index, offshift, threebody_cutoff))
            n_triples.append(triples[-1].shape[1])

    def ptr(counts):
        return torch.tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.long)

    def cat(xs, empty):
        return torch.cat(xs) if xs else empty

    graphs = dict(
        ids=[r.id for r in records],
        formulas=[r.formula for r in records],
        flags=flags,
        target=torch.tensor([np.nan if r.target is None else r.target for r in records], dtype=torch.float64),
        node_type=cat(nodes, torch.zeros(0, dtype=torch.long)),
        pos=cat(positions, torch.zeros(0, 3)),
        edge_index=torch.cat(edges, dim=1) if edges else torch.zeros(2, 0, dtype=torch.long),
        offshift=cat(shifts, torch.zeros(0, 3)),
        node_ptr=ptr(n_nodes),
        edge_ptr=ptr(n_edges),
    )
    if threebody_cutoff is None:
        return GraphSet(**graphs)
    no_triples = torch.zeros(2, 0, dtype=torch.long)
    return ThreeBodyGraphSet(**graphs, triples=torch.cat(triples, dim=1) if triples else no_triples,
                             triple_ptr=ptr(n_triples))


def cache_key(content_hash: str, cutoff: float, element_types: tuple[str, ...], extra: str = "") -> str:
    text = f"{CACHE_FORMAT}|{content_hash}|{float(cutoff)}|{','.join(element_types)}|{extra}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def save_graphs(graphs: GraphSet, path: Path) -> None:
    write_cache(path, {f.name: getattr(graphs, f.name) for f in fields(graphs)}, CACHE_FORMAT)


def load_graphs(path: Path, kind: type[GraphSet] = GraphSet) -> GraphSet | None:
    """The cached `kind` at `path`, or None (it is then rebuilt)."""
    payload = read_cache(path, CACHE_FORMAT)
    if payload is None or any(f.name not in payload for f in fields(kind)):
        return None
    return kind(**{f.name: payload[f.name] for f in fields(kind)})


def joined_ptr(ptrs: list[torch.Tensor]) -> torch.Tensor:
    """Offsets of concatenated sets, from each set's own offsets."""
    starts = torch.tensor([0] + [int(p[-1]) for p in ptrs]).cumsum(0)
    return torch.cat([torch.zeros(1, dtype=torch.long)] + [p[1:] + s for p, s in zip(ptrs, starts)])


def concat(sets: list[GraphSet]) -> GraphSet:
    """One GraphSet holding `sets` one after another."""
    if len(sets) == 1:
        return sets[0]
    joined = dict(
        ids=sum((s.ids for s in sets), []),
        formulas=sum((s.formulas for s in sets), []),
        flags=sum((s.flags for s in sets), []),
        target=torch.cat([s.target for s in sets]),
        node_type=torch.cat([s.node_type for s in sets]),
        pos=torch.cat([s.pos for s in sets]),
        edge_index=torch.cat([s.edge_index for s in sets], dim=1),
        offshift=torch.cat([s.offshift for s in sets]),
        node_ptr=joined_ptr([s.node_ptr for s in sets]),
        edge_ptr=joined_ptr([s.edge_ptr for s in sets]),
    )
    if isinstance(sets[0], ThreeBodyGraphSet):
        joined.update(triples=torch.cat([s.triples for s in sets], dim=1),
                      triple_ptr=joined_ptr([s.triple_ptr for s in sets]))
    return type(sets[0])(**joined)


@dataclass
class GraphFeaturizer(Featurizer):
    """Structure → graph settings of a graph backbone; its `key` names the cache entry."""

    cutoff: float
    element_types: tuple[str, ...]
    by_composition: ClassVar[bool] = False  # needs structures

    def key(self, content_hash: str, extra: str = "") -> str:
        return cache_key(content_hash, self.cutoff, tuple(self.element_types), extra)

    def build(self, records: list[Record]) -> GraphSet:
        return build_graphs(records, self.cutoff, tuple(self.element_types))

    save = staticmethod(save_graphs)
    load = staticmethod(load_graphs)
    concat = staticmethod(concat)


@dataclass
class ThreeBodyGraphFeaturizer(GraphFeaturizer):
    """Graphs plus their triplets within `threebody_cutoff` (M3GNet); the cutoff is part of the cache key."""

    threebody_cutoff: float

    def key(self, content_hash: str, extra: str = "") -> str:
        return super().key(content_hash, f"{extra}|threebody_cutoff={float(self.threebody_cutoff)}")

    def build(self, records: list[Record]) -> ThreeBodyGraphSet:
        return build_graphs(records, self.cutoff, tuple(self.element_types), self.threebody_cutoff)

    @staticmethod
    def load(path: Path) -> ThreeBodyGraphSet | None:
        return load_graphs(path, ThreeBodyGraphSet)
