"""SevenNet backbone: the pinned `sevenn` package's equivariant (NequIP-type) potential, with the pre-trained weights
its wheel ships (read with `weights_only=True`: the checkpoint's config holds numpy arrays, so numpy's array rebuild
function, `ndarray` and three dtypes are the only globals allowed besides torch's own).

The backbone output is SevenNet's crystal-level feature vector: the 128 invariant (0e) atom features after the last
interaction block's gate, averaged over the atoms of the structure; the readout (two linear layers to the atomic
energy, its per-species shift and scale, the sum and the force output) is cut. Graphs (every neighbour within the
weights' cutoff, 5 Å, with its bond vector) are cached per dataset like matgl's graphs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from paraisite.contracts import Backbone
from paraisite.data.graphs import NO_NEIGHBORS, NO_STRUCTURE
from paraisite.data.ragged import RaggedFeaturizer, RaggedSet
from paraisite.data.records import ELEMENT_NOT_IN_MODEL, Record
from paraisite.errors import ConfigError, DataError
from paraisite.models.io import safe_load

WEIGHTS = "7net-0"
WEIGHT_FILES = {"7net-0": "SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",  # in sevenn/pretrained_potentials/
                "7net-l3i5": "SevenNet_l3i5/checkpoint_l3i5.pth",  # l_max 3, 5 layers: slower, closer to DFT
                "7net-mf-0": "SevenNet_MF_0/checkpoint_sevennet_mf_0.pth"}  # multi-fidelity: PBE and r2SCAN heads
BACKBONE_WEIGHTS = ("7net-0", "7net-l3i5")  # single-fidelity: a backbone has no fidelity input
# `paraisite bte --potential`: name → (weight set, fidelity of a multi-fidelity set). SevenNet-MF-0's r2SCAN head
# relaxes most of Dataset1's cells to within 1 % of their volume, where SevenNet-0 (PBE) expands them by 1–8 %.
POTENTIALS = {"7net-0": ("7net-0", None), "7net-l3i5": ("7net-l3i5", None),
              "7net-mf-0-r2scan": ("7net-mf-0", "R2SCAN")}
CUT_AT = "reduce_input_to_hidden"  # the readout's first module: it and everything after it are cut
CACHE_FORMAT = 1
FIELDS = ("atomic_numbers", "edges", "edge_vec")  # per structure; edges: (source, destination) rows, local indices


def weights_file(name: str) -> Path:
    """The checkpoint of a weight set shipped in the sevenn package."""
    if name not in WEIGHT_FILES:
        raise DataError(f"unknown SevenNet weights {name!r}: use one of {sorted(WEIGHT_FILES)}")
    path = Path(str(resources.files("sevenn") / "pretrained_potentials" / WEIGHT_FILES[name]))
    if not path.is_file():
        raise DataError(f"the installed sevenn package has no pretrained weights {name!r} ({path.name})")
    return path


def read_checkpoint(name: str) -> dict:
    """SevenNet's checkpoint {config, model_state_dict, …}, read without running code."""
    core = np._core.multiarray
    allowed = [(core._reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
               np.dtypes.Float32DType, np.dtypes.Float64DType, np.dtypes.Int64DType]
    with torch.serialization.safe_globals(allowed):
        return safe_load(weights_file(name), "SevenNet checkpoint")


def sevennet_model(name: str, with_weights: bool, forces: bool = False):
    """The whole SevenNet of a shipped weight set (readout included), with its weights (strict) or random ones;
    `forces`: it also gives forces (and stress), through the gradient with respect to the bond vectors."""
    from sevenn import _keys as KEY
    from sevenn.checkpoint import _config_cp_routine
    from sevenn.model_build import build_E3_equivariant_model
    from sevenn.scripts import backward_compatibility as compat

    checkpoint = read_checkpoint(name)
    config = _config_cp_routine(checkpoint["config"])
    config[KEY.USE_OEQ] = False
    config["_flash_lammps"] = False
    model = build_E3_equivariant_model(config)
    if with_weights:
        model.load_state_dict(compat.patch_state_dict_if_old(checkpoint["model_state_dict"], config, model), strict=True)
    model.key_grad = KEY.EDGE_VEC if forces else None
    return model


def sevennet_calculator(potential: str = WEIGHTS, device: str = "cpu"):
    """An ASE calculator (energy, forces, stress) of a `POTENTIALS` entry (a shipped weight set and, for a
    multi-fidelity one, the fidelity it predicts at) on `device`, its weights read without unpickling."""
    from sevenn.calculator import SevenNetCalculator

    if potential not in POTENTIALS:
        raise DataError(f"unknown SevenNet potential {potential!r}: use one of {sorted(POTENTIALS)}")
    weights, fidelity = POTENTIALS[potential]
    return SevenNetCalculator(sevennet_model(weights, with_weights=True, forces=True), file_type="model_instance",
                              device=device, modal=fidelity)


def unusable(rec: Record, species: set[int]) -> str:
    """Why SevenNet cannot take `rec` (no structure, an element its weights do not know), or "" when it can."""
    if rec.structure is None:
        return NO_STRUCTURE
    unknown = sorted({el.symbol for el in rec.structure.composition.elements if el.Z not in species})
    return f"{ELEMENT_NOT_IN_MODEL}: {' '.join(unknown)}" if unknown else ""


@dataclass
class AtomGraphBatch:
    data: dict  # sevenn's input keys
    y: torch.Tensor
    fidelity: torch.Tensor | None = None  # the Batch contract's; SevenNet takes no fidelity (always None)


@dataclass
class AtomGraphSet(RaggedSet):
    """SevenNet graphs of one dataset: atomic numbers, edges and bond vectors per structure (`RaggedSet`)."""

    def collate(self, indices) -> AtomGraphBatch:
        from sevenn import _keys as KEY

        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        parts = {f: [self.rows(f, i) for i in idx] for f in FIELDS}
        atoms = [len(z) for z in parts["atomic_numbers"]]
        starts = np.concatenate([[0], np.cumsum(atoms)[:-1]])
        numbers = torch.cat(parts["atomic_numbers"])
        data = {KEY.ATOMIC_NUMBERS: numbers, KEY.NODE_FEATURE: numbers,
                KEY.EDGE_IDX: torch.cat([e + int(s) for e, s in zip(parts["edges"], starts)]).T.contiguous(),
                KEY.EDGE_VEC: torch.cat(parts["edge_vec"]),
                KEY.BATCH: torch.repeat_interleave(torch.arange(len(idx)), torch.tensor(atoms)),
                KEY.NUM_ATOMS: torch.tensor(atoms)}
        return AtomGraphBatch(data, self.target[torch.as_tensor(idx, dtype=torch.long)].float())


@dataclass
class SevenNetFeaturizer(RaggedFeaturizer):
    """Structures → SevenNet atom graphs (every neighbour within `cutoff` Å, bond vectors in float32); `species`
    (the atomic numbers the weights know) flags the rest. The settings are part of the cache key."""

    cutoff: float
    species: tuple[int, ...]
    by_composition: ClassVar[bool] = False
    set_class: ClassVar[type] = AtomGraphSet
    cache_format: ClassVar[int] = CACHE_FORMAT

    def key(self, content_hash: str, extra: str = "") -> str:
        text = f"sevennet|{CACHE_FORMAT}|{content_hash}|{float(self.cutoff)}|{self.species}|{extra}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def build(self, records: list[Record]) -> AtomGraphSet:
        from pymatgen.io.ase import AseAtomsAdaptor
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        species = set(self.species)
        parts, flags = {f: [] for f in FIELDS}, []
        for rec in records:
            flag = unusable(rec, species)
            graph = None if flag else unlabeled_atoms_to_graph(AseAtomsAdaptor.get_atoms(rec.structure), self.cutoff)
            tensors = {f: None for f in FIELDS} if graph is None else {
                "atomic_numbers": torch.as_tensor(graph["atomic_numbers"], dtype=torch.long),
                "edges": torch.as_tensor(graph["edge_index"], dtype=torch.long).reshape(2, -1).T,
                "edge_vec": torch.as_tensor(graph["edge_vec"], dtype=torch.float32).reshape(-1, 3)}
            for f in FIELDS:
                parts[f].append(tensors[f])
            if not flag:
                flag = NO_NEIGHBORS if len(rec.structure) > len(torch.unique(tensors["edges"][:, 0])) else ""
            flags.append(flag)
        empty = {"atomic_numbers": torch.zeros(0, dtype=torch.long), "edges": torch.zeros(0, 2, dtype=torch.long),
                 "edge_vec": torch.zeros(0, 3)}
        return AtomGraphSet.of(records, flags, parts, empty)


class SevenNetBackbone(Backbone):
    """SevenNet atom graph → 128 crystal features (module docstring). `weights`: a weight set shipped in the sevenn
    package (`7net-0`); None: random init with `architecture`'s shape. `spec` (the shape's name, stored in every
    model.pt) rebuilds the network from the installed package's checkpoint config, without its weights."""

    def __init__(self, weights: str | None = WEIGHTS, architecture: str = WEIGHTS, spec: dict | None = None):
        super().__init__()
        spec = {"architecture": weights or architecture} if spec is None or weights else spec
        if spec["architecture"] not in BACKBONE_WEIGHTS:
            raise ConfigError(f"backbone sevennet: weights {spec['architecture']!r} are not a backbone's (use one of "
                              f"{list(BACKBONE_WEIGHTS)})")
        self.spec = spec
        model = sevennet_model(spec["architecture"], with_weights=bool(weights))
        names = list(model._modules)
        self._out_dim = int(model._modules[CUT_AT].irreps_in.dim)
        for name in names[names.index(CUT_AT):]:  # the readout is cut
            model.delete_module_by_key(name)
        self.model = model
        self.species = tuple(sorted(int(z) for z in model.type_map))
        self.cutoff = float(model.cutoff)
        self.name = f"SevenNet {weights}" if weights else f"SevenNet {architecture} (random init)"

    @property
    def out_dim(self) -> int:
        return self._out_dim

    def featurizer(self) -> SevenNetFeaturizer:
        return SevenNetFeaturizer(self.cutoff, self.species)

    def forward(self, batch: AtomGraphBatch) -> torch.Tensor:
        from sevenn import _keys as KEY
        from sevenn.atom_graph_data import AtomGraphData

        data = AtomGraphData(**batch.data)
        atoms = self.model(data)[KEY.NODE_FEATURE]
        owners = data[KEY.BATCH]
        total = torch.zeros(len(batch.y), atoms.shape[1], dtype=atoms.dtype, device=atoms.device)
        total.index_add_(0, owners, atoms)
        return total / batch.data[KEY.NUM_ATOMS].to(atoms.device, atoms.dtype)[:, None]
