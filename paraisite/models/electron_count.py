"""The valence-electron count of a composition as a descriptor: how far a half-Heusler is from a closed shell.

A 1:1:1 ternary XYZ (a half-Heusler) with 8 (Nowotny–Juza, e.g. LiMgSb) or 18 valence electrons per formula unit
(e.g. TiNiSn) is a closed-shell semiconductor; at other counts (TiNiSb 19, ZrRuSb 17) it is a metal, whose phonons
the electrons screen and soften. `closed_shell_deviation` is the distance of the count from the nearer of 8 and 18
for such a composition, and 0 for any other (binaries, other stoichiometries: no rule is claimed for them). Counts:
the group number for s- and d-block elements, the group less 10 for the p block; the f block gives 3 (the
lanthanides' trivalent convention), Th and U 4 (as in ThNiSn and UNiSn, counted 18 in the half-Heusler literature).
`ElectronCount` (`Descriptors`) gives it to `PhysicsAugmented` as `extra_physics` (docs/benchmarks.md "The
valence-electron count of half-Heuslers as an input").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

from pymatgen.core import Composition, Element

from paraisite.contracts import Descriptors, Featurizer
from paraisite.data.composition import CompositionSet
from paraisite.data.records import Record

CACHE_FORMAT = 1
FEATURE = "closed_shell_deviation"
CLOSED_SHELLS = (8, 18)
F_BLOCK_VALENCE = {"Th": 4, "U": 4}  # other f-block elements: 3


def valence_electrons(element: Element, f_block_valence: dict[str, int] = F_BLOCK_VALENCE) -> int:
    """The element's valence electrons as half-Heusler counting takes them (module docstring)."""
    if element.block == "f":
        return f_block_valence.get(element.symbol, 3)
    return element.group - 10 if element.block == "p" else element.group


def closed_shell_deviation(formula: str, closed_shells=CLOSED_SHELLS, f_block_valence=F_BLOCK_VALENCE) -> float:
    """|count − the nearest closed shell| for a 1:1:1 ternary, else 0 (module docstring)."""
    amounts = Composition(formula).reduced_composition
    if len(amounts) != 3 or any(abs(n - 1.0) > 1e-8 for n in amounts.values()):
        return 0.0
    count = sum(valence_electrons(el, f_block_valence) for el in amounts.elements)
    return float(min(abs(count - shell) for shell in closed_shells))


@dataclass
class ElectronCountFeaturizer(Featurizer):
    """Records → (N, 1) `closed_shell_deviation` of their formulas, by the counting rule given (a saved model's)."""

    closed_shells: tuple[int, ...] = CLOSED_SHELLS
    f_block_valence: dict[str, int] = field(default_factory=lambda: dict(F_BLOCK_VALENCE))
    by_composition: ClassVar[bool] = False  # descriptors of the records given

    def key(self, content_hash: str, extra: str = "") -> str:
        rule = f"{tuple(self.closed_shells)}|{sorted(self.f_block_valence.items())}"
        text = f"electron_count|{CACHE_FORMAT}|{content_hash}|{rule}|{extra}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def build(self, records: list[Record]) -> CompositionSet:
        x = [[closed_shell_deviation(r.formula, self.closed_shells, self.f_block_valence)] for r in records]
        return CompositionSet.of_records(records, x, [""] * len(records))

    save, load = staticmethod(CompositionSet.save), staticmethod(CompositionSet.load)
    concat = staticmethod(CompositionSet.concat)


class ElectronCount(Descriptors):
    """`FEATURE` as it is (0 for closed shells, 1–2 for the metallic half-Heuslers of the data sets); `spec` holds
    the counting rule, so a saved model keeps its own."""

    names = (FEATURE,)
    shift = (0.0,)
    scale = (1.0,)
    label = "valence-electron count off a closed shell"

    def __init__(self, spec: dict | None = None):
        self.spec = spec or {"closed_shells": list(CLOSED_SHELLS), "f_block_valence": dict(F_BLOCK_VALENCE)}

    def featurizer(self) -> ElectronCountFeaturizer:
        return ElectronCountFeaturizer(tuple(self.spec["closed_shells"]), dict(self.spec["f_block_valence"]))
