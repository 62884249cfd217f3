"""Elemental fractions (ElemNet's 86 elements, in ElemNet's order) of formulas or of structures' compositions.

A `CompositionSet` keeps a dataset as one (N, F) float32 matrix (also the vectors of the Magpie and Debye–Grüneisen
backbones); it offers the same interface as `GraphSet` (ids, formulas, flags, target, collate), and
`CompositionFeaturizer` the same as `GraphFeaturizer`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pymatgen.core import Composition

from paraisite.contracts import Featurizer
from paraisite.data.records import ELEMENT_NOT_IN_MODEL, Record
from paraisite.models.io import read_cache, write_cache

CACHE_FORMAT = 1
ELEMNET_ELEMENTS = (
    "H Li Be B C N O F Na Mg Al Si P S Cl K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc "
    "Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg "
    "Tl Pb Bi Ac Th Pa U Np Pu"
).split()


@dataclass
class CompositionBatch:
    x: torch.Tensor  # (B, 86) elemental fractions
    y: torch.Tensor
    fidelity: torch.Tensor | None = None  # read by no composition backbone (they do not take a fidelity)


@dataclass
class CompositionSet:
    ids: list[str]
    formulas: list[str]
    flags: list[str]  # "" when usable, else why not
    target: torch.Tensor  # (N,) float64, NaN where unknown
    x: torch.Tensor  # (N, F) float32: elemental fractions (86), Magpie statistics, Debye–Grüneisen quantities

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, indices) -> CompositionBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return CompositionBatch(self.x[idx], self.target[idx].float())

    @classmethod
    def of_records(cls, records: list[Record], x, flags: list[str]) -> CompositionSet:
        """The set of `records` with their feature rows `x` (an (N, F) array) and flags."""
        return cls(ids=[r.id for r in records], formulas=[r.formula for r in records], flags=flags,
                   target=torch.tensor([float("nan") if r.target is None else r.target for r in records],
                                       dtype=torch.float64),
                   x=torch.as_tensor(np.asarray(x), dtype=torch.float32))

    @staticmethod
    def save(data: CompositionSet, path: Path) -> None:
        write_cache(path, {"ids": data.ids, "formulas": data.formulas, "flags": data.flags, "target": data.target,
                           "x": data.x}, CACHE_FORMAT)

    @staticmethod
    def load(path: Path) -> CompositionSet | None:
        payload = read_cache(path, CACHE_FORMAT)
        if payload is None:
            return None
        return CompositionSet(payload["ids"], payload["formulas"], payload["flags"], payload["target"], payload["x"])

    @staticmethod
    def concat(sets: list[CompositionSet]) -> CompositionSet:
        return CompositionSet(sum((s.ids for s in sets), []), sum((s.formulas for s in sets), []),
                              sum((s.flags for s in sets), []), torch.cat([s.target for s in sets]),
                              torch.cat([s.x for s in sets]))


def fractions(formula: str, index: dict[str, int]) -> tuple[list[float], str]:
    """(fraction per element of `index` (element → column), flag): the flag names elements outside it (then the
    fractions are zeros)."""
    amounts = Composition(formula).fractional_composition.get_el_amt_dict()
    row = [0.0] * len(index)
    missing = sorted(el for el in amounts if el not in index)
    if missing:
        return row, f"{ELEMENT_NOT_IN_MODEL}: {' '.join(missing)}"
    for el, amount in amounts.items():
        row[index[el]] = amount
    return row, ""


@dataclass
class CompositionFeaturizer(Featurizer):
    """Formula (or a structure's composition) → elemental fractions; `key` names the cache entry."""

    elements: tuple[str, ...] = tuple(ELEMNET_ELEMENTS)
    by_composition: ClassVar[bool] = True  # reads a dataset's composition table where one exists (AGL: ltc/agl_composition.csv)

    def key(self, content_hash: str, extra: str = "") -> str:
        text = f"composition|{CACHE_FORMAT}|{content_hash}|{','.join(self.elements)}|{extra}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def build(self, records: list[Record]) -> CompositionSet:
        index = {el: i for i, el in enumerate(self.elements)}
        rows = [fractions(r.formula, index) for r in records]
        x = np.array([x for x, _ in rows], dtype=np.float32).reshape(len(rows), len(self.elements))
        return CompositionSet.of_records(records, x, [f for _, f in rows])

    save, load = staticmethod(CompositionSet.save), staticmethod(CompositionSet.load)
    concat = staticmethod(CompositionSet.concat)
