"""The BTE prior: its fit, its out-of-fold score, how it is stored, and which table rows it takes."""

import numpy as np
import pytest

from paraisite.errors import DataError
from paraisite.phonons import DEFAULT_POTENTIAL, BTEResult, write_table
from paraisite.prior import (BTERow, Prior, blended_out_of_fold, bte_tables, calibrate_prior, fit_on, physical_kappa,
                             row_of)


def write_bte_table(path, rows: list[tuple], potential: str = DEFAULT_POTENTIAL) -> None:
    """A `paraisite bte` table of the `potential`'s (id, formula, κ, flag[, lowest frequency in THz, default 0.5[,
    volume ratio, default NaN[, anharmonicity, default NaN]]]) rows."""
    results = []
    for rid, formula, kappa, flag, *rest in rows:
        lowest, volume_ratio, sigma = (*rest, *(0.5, float("nan"), float("nan"))[len(rest):])
        results.append(BTEResult(rid, formula, kappa, kappa, kappa, kappa, lowest, "2x2x2", 64, 10, 1.0, flag,
                                 volume_ratio, potential, sigma))
    write_table(path, results)


def test_the_fit_finds_the_blend_that_made_the_truth():
    """True κ = the geometric mean of the model and physics at 3× the model's level: m = ln p − ln b centres the
    physics, w = 0.5, a = 0; a second, noisy model is pulled toward physics that ranks perfectly."""
    rng = np.random.default_rng(1)
    pred = np.exp(rng.normal(2, 1, 60))
    physical = np.exp(np.log(pred) + rng.normal(0, 0.4, 60)) / 3
    true = np.sqrt(pred * physical * 3)
    centre, w, a = fit_on(pred, physical, true)
    assert centre == pytest.approx(np.median(np.log(pred / physical)))
    assert w == pytest.approx(0.5, abs=0.051) and abs(a) <= 0.02
    prior = Prior(w, a, centre, 60, "", 0, 0)
    assert np.mean(np.abs(prior.blend(pred, physical) / true - 1)) < 0.03


def test_out_of_fold_blends_keep_the_model_where_physics_is_missing_and_score_below_it():
    rng = np.random.default_rng(2)
    true = np.exp(rng.normal(2, 1, 50))
    pred = true * np.exp(rng.normal(0, 0.5, 50))  # the model: noisy
    physical = true / 2 * np.exp(rng.normal(0, 0.1, 50))  # physics: off in level, sharp in order
    physical[:5] = np.nan
    out = blended_out_of_fold(pred, physical, true)
    np.testing.assert_array_equal(out[:5], pred[:5])
    prior = calibrate_prior(pred, physical, true, 0.9, "test set")
    assert prior.n_calibration == 45 and prior.weight >= 0.8
    assert prior.mape_blended < prior.mape_model / 2
    assert prior.interval.level == 0.9 and prior.interval.n_calibration == 45
    assert Prior.from_json(prior.to_json()) == prior and prior.potential == DEFAULT_POTENTIAL
    stored_before = {k: v for k, v in prior.to_json().items() if k != "potential"}
    assert Prior.from_json(stored_before) == prior  # a prior stored before the key: of the default potential


def test_only_trusted_rows_give_a_kappa_and_a_later_table_replaces_an_earlier(tmp_path):
    write_bte_table(tmp_path / "a.csv", [("x", "NaCl", 5.0, ""), ("y", "CuCl", 0.4, "imaginary_modes"),
                                         ("z", "BAs", float("inf"), "")])
    write_bte_table(tmp_path / "b.csv", [("x", "NaCl", 6.0, "", 0.5, 1.04, 0.3)])
    table = physical_kappa([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert table["x"] == ("NaCl", 6.0, "", 6.0, 0.5, 1.04, 0.3)
    assert table["y"] == ("CuCl", None, "imaginary_modes", 0.4, 0.5, None, None)  # computed, not trusted; no volume
    # ratio nor σᴬ
    assert table["z"] == ("BAs", None, "no_scattering", None, 0.5, None, None)  # an old unflagged row above MAX_KAPPA
    (tmp_path / "c.csv").write_text("id,kappa\n")
    with pytest.raises(DataError, match="c.csv: not a BTE κ table"):
        physical_kappa([tmp_path / "c.csv"])
    nan = float("nan")  # a later row whose calculation failed (a renormalisation, e.g.) keeps the earlier row
    write_bte_table(tmp_path / "d.csv", [("y", "CuCl", nan, "failed: AssertionError: "),
                                         ("w", "KCl", nan, "failed: x")])
    table = physical_kappa([tmp_path / "a.csv", tmp_path / "d.csv"])
    assert table["y"] == ("CuCl", None, "imaginary_modes", 0.4, 0.5, None, None)
    assert table["w"] == ("KCl", None, "failed: x", None, 0.5, None, None)  # none earlier: the failure is the row


def test_tables_are_read_by_potential_and_one_potential_is_asked_where_rows_are_merged(tmp_path):
    write_bte_table(tmp_path / "pbe.csv", [("x", "NaCl", 5.0, "")])
    write_bte_table(tmp_path / "scan.csv", [("x", "NaCl", 7.0, ""), ("w", "KCl", 3.0, "")], "7net-mf-0-r2scan")
    by_potential = bte_tables([tmp_path / "pbe.csv", tmp_path / "scan.csv"])
    assert list(by_potential) == [DEFAULT_POTENTIAL, "7net-mf-0-r2scan"]  # in the order given; neither replaces
    assert by_potential[DEFAULT_POTENTIAL]["x"].kappa == 5.0 and by_potential["7net-mf-0-r2scan"]["x"].kappa == 7.0
    assert physical_kappa([tmp_path / "scan.csv"])["w"].kappa == 3.0  # the tables' own potential
    assert physical_kappa([], "7net-mf-0-r2scan") == {}
    with pytest.raises(DataError, match=r"pbe.csv, .*scan.csv: rows of the potential\(s\) 7net-mf-0-r2scan; give "
                                        r"tables of 7net-0 alone"):
        physical_kappa([tmp_path / "pbe.csv", tmp_path / "scan.csv"])
    with pytest.raises(DataError, match="rows of the potential.*7net-0; give tables of 7net-mf-0-r2scan alone"):
        physical_kappa([tmp_path / "pbe.csv"], "7net-mf-0-r2scan")


def test_a_structure_file_finds_its_row_by_id_file_name_or_stem():
    physical = {"mp-1000": BTERow("BaTe", 1.0, ""), "elsewhere/NaCl.cif": BTERow("NaCl", 2.0, ""),
                "NaCl.cif": BTERow("NaCl", 3.0, "")}
    assert row_of(physical, "elsewhere/NaCl.cif").kappa == 2.0  # the id first
    assert row_of(physical, "mine/NaCl.cif").kappa == 3.0  # then the file name
    assert row_of(physical, "mine/mp-1000.cif").kappa == 1.0  # then the stem
    assert row_of(physical, "mine/mp-1001.cif") is None

