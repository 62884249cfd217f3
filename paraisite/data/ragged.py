"""Per-structure tensors of varying length (a potential's graphs: atoms, bonds, angles), packed per dataset and cached.

A `RaggedSet` holds, for each field, the rows of every structure concatenated plus per-structure offsets; a
`RaggedFeaturizer` saves, loads and joins its sets (the featurizers of CHGNet and SevenNet build them).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from paraisite.contracts import Featurizer
from paraisite.data.graphs import joined_ptr
from paraisite.data.records import Record
from paraisite.models.io import read_cache, write_cache


@dataclass
class RaggedSet:
    """The featurized records of one dataset: record i owns rows ptrs[f][i]:ptrs[f][i + 1] of tensors[f]; a flagged
    record owns none. Subclasses add settings (fields after these) and `collate`."""

    ids: list[str]
    formulas: list[str]
    flags: list[str]
    target: torch.Tensor
    tensors: dict[str, torch.Tensor]
    ptrs: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, name: str, i: int) -> torch.Tensor:
        return self.tensors[name][int(self.ptrs[name][i]):int(self.ptrs[name][i + 1])]

    @classmethod
    def of(cls, records: list[Record], flags: list[str], parts: dict[str, list], empty: dict[str, torch.Tensor],
           **settings) -> RaggedSet:
        """The set of `records` from their tensors (`parts[f]`: one per record, None for a flagged one)."""
        counts = {f: [0 if t is None else len(t) for t in ts] for f, ts in parts.items()}
        kept = {f: [t for t in ts if t is not None] for f, ts in parts.items()}
        return cls(ids=[r.id for r in records], formulas=[r.formula for r in records], flags=flags,
                   target=torch.tensor([np.nan if r.target is None else r.target for r in records], dtype=torch.float64),
                   tensors={f: torch.cat(ts) if ts else empty[f] for f, ts in kept.items()},
                   ptrs={f: torch.tensor(np.concatenate([[0], np.cumsum(c)]), dtype=torch.long)
                         for f, c in counts.items()}, **settings)

    @classmethod
    def joined(cls, sets: list[RaggedSet]) -> RaggedSet:
        """One set holding `sets` one after another (their settings are the first's)."""
        if len(sets) == 1:
            return sets[0]
        first = sets[0]
        settings = {f.name: getattr(first, f.name) for f in fields(cls) if f.name not in RAGGED_FIELDS}
        return cls(ids=[i for s in sets for i in s.ids], formulas=[f for s in sets for f in s.formulas],
                   flags=[f for s in sets for f in s.flags], target=torch.cat([s.target for s in sets]),
                   tensors={f: torch.cat([s.tensors[f] for s in sets]) for f in first.tensors},
                   ptrs={f: joined_ptr([s.ptrs[f] for s in sets]) for f in first.ptrs}, **settings)


RAGGED_FIELDS = {f.name for f in fields(RaggedSet)}


class RaggedFeaturizer(Featurizer):
    """A featurizer whose sets are `set_class` (a RaggedSet), cached in `cache_format`."""

    set_class: ClassVar[type[RaggedSet]]
    cache_format: ClassVar[int]

    def save(self, data: RaggedSet, path: Path) -> None:
        write_cache(path, vars(data), self.cache_format)

    def load(self, path: Path) -> RaggedSet | None:
        payload = read_cache(path, self.cache_format)
        return None if payload is None else self.set_class(**{k: v for k, v in payload.items() if k != "format"})

    def concat(self, sets: list[RaggedSet]) -> RaggedSet:
        return self.set_class.joined(sets)
