"""Shared test helpers: composing configs, a stage with the published defaults, structures as records."""

from dataclasses import replace

from hydra import compose, initialize_config_dir
from pymatgen.core import Lattice, Structure

from paraisite.data.records import Record
from paraisite.recipe import stages_of
from paraisite.settings import Stage
from tests.conftest import ROOT


def cfg_of(*overrides):
    """The composed config (conf/train.yaml + overrides)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def compose_cfg(*overrides):
    """The smoke preset + overrides."""
    return cfg_of("experiment=smoke", *overrides)


def stage(**keys) -> Stage:
    """The published recipe's DFT stage (conf/train.yaml), with `keys` changed."""
    return replace(stages_of(cfg_of("finetune=dft"))[0], **keys)


CSCL = Structure(Lattice.cubic(4.1437), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # matgl's documented example


def records_of(structures) -> list[Record]:
    """Structures as records (id: position, target 1)."""
    return [Record(str(i), s.composition.reduced_formula, 1.0, s) for i, s in enumerate(structures)]
