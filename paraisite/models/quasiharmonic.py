"""Debye–Grüneisen descriptors from CHGNet energies: a physics backbone for κ (the quasi-harmonic model of AFLOW's AGL).

For each structure, CHGNet's energy (the weights the pinned chgnet wheel ships, read without unpickling) on the cell
scaled isotropically: a coarse scan over volume factors 0.80–1.25 finds the lowest energy, 13 volumes within ±12 %
of it are fitted with the Birch–Murnaghan equation of state (pymatgen) → equilibrium volume V0, bulk modulus B and its
pressure derivative B'. Then, as AGL does (Toher et al., Phys. Rev. B 90, 174107, 2014; Poisson ratio 0.25):
Debye temperature θ_D = (ħ/k_B) (6π² V0^½ n)^⅓ f(σ) √(B/M), acoustic Debye temperature θ_a = θ_D n^-⅓, Grüneisen
parameter γ = B'/2 − 1/6 (Slater; B' clipped to [1, 10], physical values are 3–6) and Slack's κ at 300 K; also
Slack's κ with γ = 2 for every material (CHGNet's B' is noisy: on AGL structures that κ follows AGL's own better).
All of it on the primitive cell (θ_a counts its atoms). Internal coordinates are not relaxed at each volume (exact
where symmetry fixes every position: rocksalt, zincblende, half-Heusler; an approximation elsewhere). Against AGL's
own 300 K values over the AGL set
(`scripts/quasiharmonic_agl.py`, docs/benchmarks.md): Spearman 0.67 (γ from B'), 0.74 (γ = 2) over 3254 structures;
the fit range (±4/8/12 % on 250 of them) and γ = 2 were chosen there, never on a DFT set.

`QuasiHarmonicBackbone` has no trainable weights: its output is the `FEATURES` vector, meant for
`finetune=features` (a scikit-learn regressor: ridge is a calibrated Slack model). A cell CHGNet cannot hold
(element beyond Pu) or whose energy has no minimum in the scan is flagged and left out, listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
from dataclasses import astuple, dataclass
from typing import ClassVar

import numpy as np
import torch

from paraisite.contracts import Backbone, Descriptors, Featurizer
from paraisite.data.composition import CompositionSet
from paraisite.data.records import NO_EQUILIBRIUM, Record
from paraisite.errors import ConfigError
from paraisite.models.chgnet import WEIGHTS, load_chgnet, unusable

CACHE_FORMAT = 2  # 2: 13 volumes within ±12 %, Slack's κ at γ = 2
HBAR, K_B, AMU, EV_PER_A3 = 1.054571817e-34, 1.380649e-23, 1.66053906660e-27, 1.602176634e11  # SI; eV/Å³ in Pa
COARSE = tuple(np.linspace(0.80, 1.25, 10))  # volume factors of the scan for the minimum ...
FINE = tuple(np.linspace(0.88, 1.12, 13))  # ... and, times the best of them, of the fit
POISSON_RATIO = 0.25
FIXED_GAMMA = 2.0
FEATURES = ("ln kappa_slack_300K", "ln kappa_slack_gamma2_300K", "ln theta_debye", "ln theta_acoustic", "gamma",
            "ln bulk_modulus_GPa", "bulk_modulus_derivative", "ln mean_atomic_mass", "ln volume_per_atom",
            "ln atoms_per_cell")
# Mean and standard deviation of each of FEATURES over AGL's 3254 usable structures (scripts/quasiharmonic_agl.py).
AGL_MEAN = (0.7039, 1.0274, 5.834, 5.1416, 2.4464, 4.5215, 5.2262, 4.4171, 2.9407, 2.0771)
AGL_STD = (1.3157, 1.0442, 0.398, 0.4363, 0.7317, 0.6652, 1.4633, 0.5377, 0.3263, 0.6995)


@dataclass(frozen=True)
class DebyeGruneisen:
    """One structure's quasi-harmonic quantities (SI-free units named in the fields)."""

    kappa_slack_300K: float  # W/mK
    kappa_slack_gamma2_300K: float  # W/mK, with γ = FIXED_GAMMA
    theta_debye: float  # K
    theta_acoustic: float  # K
    gamma: float
    bulk_modulus_GPa: float
    bulk_modulus_derivative: float
    mean_atomic_mass: float  # u
    volume_per_atom: float  # Å³
    atoms_per_cell: int

    def features(self) -> list[float]:
        """The `FEATURES` vector: logs of the positive quantities, γ and B' as they are."""
        k, k2, td, ta, g, b, bp, m, v, n = astuple(self)
        return [math.log(k), math.log(k2), math.log(td), math.log(ta), g, math.log(b), bp, math.log(m), math.log(v),
                math.log(n)]


def poisson_factor(sigma: float = POISSON_RATIO) -> float:
    """f(σ) of the Debye temperature of an isotropic solid with Poisson ratio σ."""
    longitudinal = (2 / 3 * (1 + sigma) / (1 - 2 * sigma)) ** 1.5
    transverse = (1 / 3 * (1 + sigma) / (1 - sigma)) ** 1.5
    return (3 / (2 * longitudinal + transverse)) ** (1 / 3)


def slack_kappa(theta_acoustic: float, gamma: float, mean_mass_kg: float, volume_per_atom_m3: float,
                temperature: float = 300.0) -> float:
    """Slack's lattice thermal conductivity (W/mK) at `temperature` (Toher et al. 2014, eqs. 7–8)."""
    prefactor = 0.849 * 3 * 4 ** (1 / 3) / (20 * math.pi ** 3 * (1 - 0.514 / gamma + 0.228 / gamma ** 2))
    at_theta = (prefactor * (K_B * theta_acoustic / HBAR) ** 2 * K_B * mean_mass_kg * volume_per_atom_m3 ** (1 / 3)
                / (HBAR * gamma ** 2))
    return at_theta * theta_acoustic / temperature


def debye_gruneisen(volumes: np.ndarray, energies: np.ndarray, masses: list[float]) -> DebyeGruneisen:
    """The quasi-harmonic quantities from a cell's energies (eV) at `volumes` (Å³) and its atoms' masses (u);
    ValueError when the energies have no minimum inside the volumes or the fit is not physical."""
    from pymatgen.analysis.eos import EOS, EOSError

    n = len(masses)
    try:
        fit = EOS("birch_murnaghan").fit(list(volumes), list(energies))
    except (EOSError, RuntimeError) as exc:  # RuntimeError: scipy's least squares did not converge
        raise ValueError(f"equation of state fit failed ({exc})") from None
    if not (volumes.min() < fit.v0 < volumes.max()) or not fit.b0 > 0:
        raise ValueError(f"no energy minimum inside {volumes.min():.1f}–{volumes.max():.1f} Å³")
    bulk = fit.b0 * EV_PER_A3  # Pa
    derivative = float(np.clip(fit.b1, 1.0, 10.0))
    mass = sum(masses) * AMU
    theta = HBAR / K_B * (6 * math.pi ** 2 * math.sqrt(fit.v0 * 1e-30) * n) ** (1 / 3) * poisson_factor() \
        * math.sqrt(bulk / mass)
    theta_a, gamma = theta * n ** (-1 / 3), derivative / 2 - 1 / 6
    kappa, kappa_fixed = (slack_kappa(theta_a, g, mass / n, fit.v0 * 1e-30 / n) for g in (gamma, FIXED_GAMMA))
    return DebyeGruneisen(kappa, kappa_fixed, theta, theta_a, gamma, bulk / 1e9, derivative, sum(masses) / n,
                          fit.v0 / n, n)


def scaled(structure, factors) -> list:
    """Copies of `structure` with the volume × each factor (isotropic)."""
    copies = []
    for f in factors:
        copy = structure.copy()
        copy.scale_lattice(structure.volume * float(f))
        copies.append(copy)
    return copies


@dataclass
class QuasiHarmonicFeaturizer(Featurizer):
    """Structures → `FEATURES` (a `CompositionSet` of (N, 10) vectors) from the energies of CHGNet `weights`."""

    weights: str = WEIGHTS
    by_composition: ClassVar[bool] = False

    def key(self, content_hash: str, extra: str = "") -> str:
        import chgnet

        text = (f"quasiharmonic|{CACHE_FORMAT}|{content_hash}|chgnet {chgnet.__version__} {self.weights}|"
                f"{COARSE}|{FINE}|{POISSON_RATIO}|{FIXED_GAMMA}|{extra}")
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def energies(self, model, structures: list) -> np.ndarray:
        """CHGNet's total energies (eV) of `structures`."""
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            predictions = model.predict_structure(structures, task="e", batch_size=16)
        return np.array([float(p["e"]) for p in predictions]) * np.array([len(s) for s in structures])

    def describe(self, model, structure) -> DebyeGruneisen:
        """The quantities of `structure`'s primitive cell (θ_a and Slack's κ count the atoms of the primitive cell)."""
        structure = structure.get_primitive_structure()
        coarse = self.energies(model, scaled(structure, COARSE))
        best = COARSE[int(np.argmin(coarse))]
        cells = scaled(structure, [best * f for f in FINE])
        return debye_gruneisen(np.array([c.volume for c in cells]), self.energies(model, cells),
                               [float(site.specie.atomic_mass) for site in structure])

    def build(self, records: list[Record]) -> CompositionSet:
        model = load_chgnet(self.weights).eval()
        x, flags = np.zeros((len(records), len(FEATURES))), []
        for i, rec in enumerate(records):
            flag = unusable(rec)
            if flag:
                flags.append(flag)
                continue
            try:
                row = self.describe(model, rec.structure).features()
            except (ValueError, ArithmeticError) as exc:  # no minimum, a failed fit, a cell CHGNet cannot graph
                flags.append(f"{NO_EQUILIBRIUM}: {exc}")
                continue
            if not np.isfinite(row).all():
                flags.append(f"{NO_EQUILIBRIUM}: non-finite Debye–Grüneisen quantities")
                continue
            x[i] = row
            flags.append("")
        return CompositionSet.of_records(records, x, flags)

    # the cache file and concatenation of every vector feature set
    save, load = staticmethod(CompositionSet.save), staticmethod(CompositionSet.load)
    concat = staticmethod(CompositionSet.concat)


class QuasiHarmonicDescriptors(Descriptors):
    """The `FEATURES` of CHGNet `energy_model`'s energies as descriptors of `PhysicsAugmented`, standardised by their
    mean and spread over AGL's structures (a set no DFT test reads)."""

    names, shift, scale = FEATURES, AGL_MEAN, AGL_STD

    def __init__(self, energy_model: str = WEIGHTS, spec: dict | None = None):
        self.spec = dict(spec) if spec is not None else {"energy_model": energy_model}
        self.label = f"Debye–Grüneisen (CHGNet {self.spec['energy_model']} energies)"

    def featurizer(self) -> QuasiHarmonicFeaturizer:
        return QuasiHarmonicFeaturizer(self.spec["energy_model"])


class QuasiHarmonicBackbone(Backbone):
    """Structure → the 10 Debye–Grüneisen `FEATURES` (module docstring); no trainable weights. `energy_model`: the
    CHGNet weight set whose energies are used. `weights` must be None (nothing to pre-train)."""

    def __init__(self, energy_model: str = WEIGHTS, weights: str | None = None, spec: dict | None = None):
        super().__init__()
        if weights:
            raise ConfigError(f"backbone quasiharmonic has no pre-trained weights (got {weights!r}); "
                              "use pretrain=scratch")
        self.spec = dict(spec) if spec is not None else {"energy_model": energy_model}
        self._featurizer = QuasiHarmonicFeaturizer(self.spec["energy_model"])
        self.name = f"Debye–Grüneisen (CHGNet {self.spec['energy_model']} energies)"

    @property
    def out_dim(self) -> int:
        return len(FEATURES)

    def featurizer(self) -> QuasiHarmonicFeaturizer:
        return self._featurizer

    def forward(self, batch) -> torch.Tensor:
        return batch.x
