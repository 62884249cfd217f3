"""The phonon-BTE κ tool: supercells, a whole run with a cheap potential (EMT), resume, bad tables, the CLI's checks."""

import math
from dataclasses import replace

import numpy as np
import pytest
from ase.calculators.emt import EMT
from pymatgen.core import Lattice, Structure

from paraisite.cli import main, parse_shard
from paraisite.data.graphs import NO_STRUCTURE
from paraisite.data.records import Record
from paraisite.errors import DataError, ParaisiteError
from paraisite.phonons import (COLUMNS, DEFAULT_POTENTIAL, LEGACY_COLUMNS, BTEResult, BTESettings, anharmonicity,
                               fill_table, forces_on, harmonic, harmonic_fc2, kappa_table, mesh_frequencies, read_table,
                               phonon_cell, renormalised_fc2, supercell_multiples, write_table)
from tests.helpers import CSCL

CU = Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
FAST = BTESettings(mesh=5, min_length=7.0, cutoff_pair_distance=4.0, fmax=1e-3)


def test_supercell_is_the_shortest_multiple_of_each_edge_reaching_the_length():
    assert supercell_multiples([5.6, 5.6, 5.6], 7.0) == (2, 2, 2)  # rock salt: 64 atoms
    assert supercell_multiples([3.2, 3.2, 5.2], 7.0) == (3, 3, 2)  # wurtzite: 72 atoms
    assert supercell_multiples([3.5, 7.0, 12.0], 7.0, 1) == (2, 1, 1)  # an exact multiple is long enough
    assert supercell_multiples([7.1, 7.1, 7.1], 7.0) == (2, 2, 2)  # never the cell alone


@pytest.mark.slow
def test_a_run_writes_one_row_per_record_and_resumes_without_recomputing(tmp_path):
    records = [Record("cu", "Cu", None, CU), Record("none", "Cu", None, None)]
    path = tmp_path / "kappa.csv"
    table = kappa_table(records, EMT(), path, FAST)
    cu = table["cu"]
    assert math.isfinite(cu.kappa) and cu.kappa > 0 and cu.flag == ""
    assert cu.kappa_xx == pytest.approx(cu.kappa_zz, rel=1e-6)  # cubic: isotropic
    assert (cu.supercell, cu.atoms) == ("2x2x2", 32) and 0 < cu.displacements
    assert cu.min_frequency > -0.1  # fcc Cu is stable with EMT
    assert 0.95 < cu.volume_ratio < 1.05 and cu.volume_ratio != 1.0  # EMT's lattice constant is near, not at, 3.61 Å
    assert 0.1 < cu.anharmonicity < 0.4  # fcc Cu (EMT) at 300 K
    assert table["none"].flag == NO_STRUCTURE and math.isnan(table["none"].kappa)
    again = kappa_table(records, None, path, FAST)  # nothing left to compute: the calculator is never used
    assert again["cu"] == read_table(path)["cu"] == cu  # the CSV holds every number exactly
    assert again["none"].flag == NO_STRUCTURE
    assert path.read_text().count("\n") == 3  # header + one row per record


@pytest.mark.slow
def test_self_consistent_phonons_recover_a_stable_crystal_from_unstable_force_constants():
    """fcc Cu (EMT) from −½ × its own 0 K force constants (every mode imaginary): the thermal ensemble's forces pull
    the constants back to a stable crystal's, near the 0 K ones at 50 K; reproducible with the same seed."""
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=["Cu"] * 4, cell=CU.lattice.matrix, scaled_positions=CU.frac_coords)
    ph = harmonic(unit, (2, 2, 2))
    ph.generate_displacements(distance=0.03)
    ph.forces = [forces_on(cell, EMT()) for cell in ph.supercells_with_displacements]
    ph.produce_force_constants()
    settings = BTESettings(mesh=5, temperature=50.0, renormalise=6, snapshots=4)
    assert mesh_frequencies(unit, (2, 2, 2), -0.5 * ph.force_constants, 5).min() < -1
    fc2 = renormalised_fc2(unit, (2, 2, 2), -0.5 * ph.force_constants, EMT(), settings, seed=3)
    assert mesh_frequencies(unit, (2, 2, 2), fc2, 5).min() > -0.1
    top = [mesh_frequencies(unit, (2, 2, 2), fc, 5).max() for fc in (ph.force_constants, fc2)]
    assert top[1] == pytest.approx(top[0], rel=0.05)
    np.testing.assert_array_equal(fc2, renormalised_fc2(unit, (2, 2, 2), -0.5 * ph.force_constants, EMT(), settings,
                                                        seed=3))


@pytest.mark.slow
def test_a_failed_anharmonicity_costs_the_row_nothing_but_its_own_column(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("sampling failed")

    monkeypatch.setattr("paraisite.phonons.anharmonicity", broken)
    cu = kappa_table([Record("cu", "Cu", None, CU)], EMT(), tmp_path / "k.csv", FAST)["cu"]
    assert cu.trusted and cu.kappa > 0 and math.isnan(cu.anharmonicity)


@pytest.mark.slow
def test_anharmonicity_grows_with_temperature_is_reproducible_and_nil_for_harmonic_forces():
    """σᴬ of fcc Cu (EMT): larger at 900 K than at 100 K (the displacements reach further into the anharmonic
    potential); the same seed gives the same number; forces that are exactly the harmonic ones give 0."""
    from ase.build import bulk
    from ase.calculators.calculator import Calculator, all_changes

    unit, multiples = phonon_cell(bulk("Cu", "fcc", a=3.61, cubic=True), FAST)
    assert multiples == (2, 2, 2)
    fc2 = harmonic_fc2(unit, (2, 2, 2), EMT(), FAST)
    cold, hot = (anharmonicity(unit, (2, 2, 2), fc2, EMT(), replace(FAST, temperature=t, snapshots=4), seed=1)
                 for t in (100.0, 900.0))
    assert 0.05 < cold < 0.25 and 2 * cold < hot < 0.6
    assert anharmonicity(unit, (2, 2, 2), fc2, EMT(), replace(FAST, temperature=900.0, snapshots=4), seed=1) == hot
    ideal = harmonic(unit, (2, 2, 2))
    reference = ideal.supercell.positions

    class Harmonic(Calculator):  # F = −Φ·u about the ideal supercell
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            u = atoms.positions - reference
            self.results = {"forces": -np.einsum("ijab,jb->ia", fc2, u), "energy": 0.0}

    assert anharmonicity(unit, (2, 2, 2), fc2, Harmonic(), replace(FAST, snapshots=2), seed=1) < 1e-8


@pytest.mark.parametrize(("kappa", "flag", "trusted"), [(30.0, "", True), (30.0, "imaginary_modes", False),
                                                      (float("inf"), "", False), (9.5e5, "", False),
                                                      (0.0, "", False)])
def test_only_finite_unflagged_kappa_below_the_bound_is_trusted(kappa, flag, trusted):
    row = BTEResult("id", "AlSb", kappa, kappa, kappa, kappa, 0.0, "2x2x2", 64, 62, 1.0, flag)
    assert row.trusted is trusted


def test_records_the_calculator_cannot_take_are_written_with_their_reason(tmp_path):
    table = kappa_table([Record("po", "Po", None, CU)], None, tmp_path / "k.csv", FAST, {"po": "element_not_in_model: Po"})
    assert table["po"].flag == "element_not_in_model: Po" and math.isnan(table["po"].kappa)


@pytest.mark.parametrize("error", [RuntimeError, AssertionError])  # AssertionError: phonopy's numerical checks
def test_a_structure_whose_calculation_fails_is_flagged_and_the_run_goes_on(tmp_path, error):
    class Broken(EMT):
        def calculate(self, *args, **kwargs):
            raise error("no energy")

    records = [Record("cu", "Cu", None, CU), Record("po", "Po", None, CU)]
    table = kappa_table(records, Broken(), tmp_path / "k.csv", FAST, {"po": "element_not_in_model: Po"})
    assert table["cu"].flag == f"failed: {error.__name__}: no energy" and table["cu"].failed
    assert not table["cu"].trusted and not table["po"].failed and list(read_table(tmp_path / "k.csv")) == ["cu", "po"]


def test_a_file_that_is_not_a_kappa_table_is_refused_by_name(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("id,kappa\na,1\n")
    with pytest.raises(DataError, match="other.csv: not a BTE κ table"):
        kappa_table([], None, path)


def test_a_table_without_volume_ratios_reads_nan_is_upgraded_when_resumed_and_filled_by_relaxation(tmp_path):
    """A table written before the column existed: read with NaN there; a resumed run rewrites it with the column
    before appending (no row lost); `fill_table` relaxes only the rows without one, and a second fill computes
    nothing; a column it cannot compute is refused."""
    path = tmp_path / "old.csv"
    cu = BTEResult("cu", "Cu", 12.5, 12.5, 12.5, 12.5, 0.3, "2x2x2", 32, 4, 1.0)
    oldest = LEGACY_COLUMNS[0]  # before `volume_ratio`, `potential` and `anharmonicity`
    path.write_text(",".join(oldest) + "\n" + ",".join(map(str, list(vars(cu).values())[:len(oldest)])) + "\n")
    assert math.isnan(read_table(path)["cu"].volume_ratio) and read_table(path)["cu"].kappa == 12.5
    kappa_table([Record("po", "Po", None, CU)], None, path, FAST, {"po": "element_not_in_model: Po"})
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert list(read_table(path)) == ["cu", "po"] and read_table(path)["cu"].kappa == 12.5
    records = [Record("cu", "Cu", None, CU), Record("po", "Po", None, None), Record("elsewhere", "Cu", None, CU)]
    filled = fill_table(records, EMT(), path, "volume_ratio", FAST)
    assert 0.95 < filled["cu"].volume_ratio < 1.05 and math.isnan(filled["po"].volume_ratio)  # no structure: NaN
    assert math.isnan(filled["cu"].anharmonicity)  # not asked for
    assert str(read_table(path)) == str(filled) and "elsewhere" not in filled and filled["cu"].kappa == 12.5  # str: NaN
    assert str(fill_table(records, None, path, "volume_ratio", FAST)) == str(filled)  # nothing left: no calculator
    write_table(path, filled.values())
    assert str(read_table(path)) == str(filled)
    with pytest.raises(ValueError, match="no column 'kappa' to fill"):
        fill_table(records, None, path, "kappa", FAST)


@pytest.mark.slow
def test_a_table_without_anharmonicity_is_filled_keeping_its_other_columns(tmp_path):
    path = tmp_path / "old.csv"
    cu = BTEResult("cu", "Cu", 12.5, 12.5, 12.5, 12.5, 0.3, "2x2x2", 32, 4, 1.0, "", 1.5)
    before = LEGACY_COLUMNS[2]  # before `anharmonicity`
    path.write_text(",".join(before) + "\n" + ",".join(map(str, list(vars(cu).values())[:len(before)])) + "\n")
    assert math.isnan(read_table(path)["cu"].anharmonicity)
    filled = fill_table([Record("cu", "Cu", None, CU)], EMT(), path, "anharmonicity", FAST)["cu"]
    assert 0.1 < filled.anharmonicity < 0.4 and filled.volume_ratio == 1.5 and filled.kappa == 12.5
    assert read_table(path)["cu"] == filled


def test_each_row_records_its_potential_and_a_table_is_resumed_with_its_own_alone(tmp_path):
    """A table written before the `potential` column takes the potential it is resumed with (one per table); a
    table of one potential is not resumed with another, and nothing in it is lost."""
    path = tmp_path / "old.csv"
    old = BTEResult("cu", "Cu", 12.5, 12.5, 12.5, 12.5, 0.3, "2x2x2", 32, 4, 1.0, "", 1.01)
    before = LEGACY_COLUMNS[1]  # with `volume_ratio`, before `potential`
    path.write_text(",".join(before) + "\n" + ",".join(map(str, list(vars(old).values())[:len(before)])) + "\n")
    assert read_table(path)["cu"].potential == DEFAULT_POTENTIAL  # read alone: the default potential's
    po = Record("po", "Po", None, CU)
    table = kappa_table([po], None, path, FAST, {"po": "element_not_in_model: Po"}, potential="7net-mf-0-r2scan")
    assert {row.potential for row in table.values()} == {"7net-mf-0-r2scan"} == {
        row.potential for row in read_table(path).values()}
    text = path.read_text()
    with pytest.raises(DataError, match="old.csv: a table of the potential 7net-mf-0-r2scan; its rows are not "
                                        "resumed with 7net-0"):
        kappa_table([po], None, path, FAST, {"po": "element_not_in_model: Po"})
    with pytest.raises(DataError, match="a table of the potential 7net-mf-0-r2scan"):
        fill_table([Record("cu", "Cu", None, CU)], None, path, "volume_ratio", FAST)
    assert path.read_text() == text


def test_an_unreadable_row_is_refused_with_its_line(tmp_path):
    path = tmp_path / "k.csv"
    kappa_table([Record("po", "Po", None, CU)], None, path, FAST, {"po": "element_not_in_model: Po"})
    path.write_text(path.read_text() + "cu,Cu,lots,1,1,1,0,2x2x2,32,8,1.0,\n")
    with pytest.raises(DataError, match=r"k.csv, line 3 \(cu\): unreadable row"):
        read_table(path)


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "1"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(ParaisiteError, match="--shard"):
        parse_shard(text)
    assert parse_shard("2/3") == (1, 3)


@pytest.mark.slow
def test_the_cli_runs_sevennet_on_a_folder_and_flags_what_it_cannot_take(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    CSCL.to(filename=str(tmp_path / "in" / "CsCl.cif"))
    Structure(Lattice.cubic(3.4), ["Po", "Ra"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(tmp_path / "in" / "PoRa.cif"))
    out = tmp_path / "k.csv"
    assert main(["bte", str(tmp_path / "in"), "--output", str(out), "--mesh", "4", "--cutoff-pair-distance", "3",
                 "--device", "cpu"]) == 0
    table = read_table(out)
    assert "1 of 2 with κ by 7net-0 →" in capsys.readouterr().out
    assert {row.potential for row in table.values()} == {"7net-0"}
    cscl, pora = sorted(table.values(), key=lambda r: r.formula)
    assert cscl.formula == "CsCl" and cscl.kappa > 0 and cscl.supercell == "2x2x2" and cscl.atoms == 16
    assert pora.flag.startswith("element_not_in_model") and math.isnan(pora.kappa)
    assert cscl.volume_ratio > 0
    legacy = tmp_path / "legacy.csv"  # --fill volume_ratio: a table written before the column gets it
    lines = out.read_text().splitlines()
    legacy.write_text("\n".join(",".join(line.split(",")[:len(LEGACY_COLUMNS[0])]) for line in lines))
    assert main(["bte", str(tmp_path / "in"), "--output", str(legacy), "--fill", "volume_ratio"]) == 0
    assert read_table(legacy)[cscl.id].volume_ratio == pytest.approx(cscl.volume_ratio, rel=1e-6)
    assert "1 of 2 rows with volume_ratio" in capsys.readouterr().out
    assert main(["bte", str(tmp_path / "in"), "--output", str(tmp_path / "none.csv"), "--fill", "volume_ratio"]) == 2
    assert "no table" in capsys.readouterr().err and not (tmp_path / "none.csv").exists()
    flagged = tmp_path / "flagged.csv"  # --unstable-in: only the structures a table flags imaginary_modes
    write_table(flagged, [replace(row, flag="imaginary_modes") if row is cscl else row for row in table.values()])
    again = tmp_path / "again.csv"
    assert main(["bte", str(tmp_path / "in"), "--output", str(again), "--mesh", "4", "--cutoff-pair-distance", "3",
                 "--unstable-in", str(flagged), "--renormalise", "2"]) == 0
    assert list(read_table(again)) == [cscl.id] and read_table(again)[cscl.id].trusted  # stable: not renormalised
    assert main(["bte", str(tmp_path / "in"), "--output", str(tmp_path / "x.csv"), "--potential", "7net-9"]) == 2
    assert ("unknown SevenNet potential '7net-9': use one of ['7net-0', '7net-l3i5', '7net-mf-0-r2scan']"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(["bte", str(tmp_path / "in"), "--output", str(tmp_path / "x.csv"), "--device", "gpu"])
    assert "--device: invalid choice: 'gpu'" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
