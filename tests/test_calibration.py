"""MAPE calibration: the closed-form factor, and `calibrate=true` runs (fitted on validation only, kept in the model)."""

import csv
import json

import numpy as np
import pytest

from paraisite import chain
from paraisite.calibration import fit_calibration, mape_scale, weighted_median
from paraisite.errors import ConfigError, ParaisiteError
from paraisite.predict import load_ensemble, predict
from tests.conftest import write_records
from tests.helpers import compose_cfg


def mape(true, pred):
    return float(np.mean(np.abs(pred - true) / true))


def test_the_factor_is_the_minimiser_of_the_mape():
    rng = np.random.default_rng(0)
    true = 10 ** rng.uniform(-0.3, 3, 60)
    pred = true * np.exp(0.5 * rng.standard_normal(60))
    scale = mape_scale(true, pred)
    grid = np.linspace(0.3, 2.0, 3401)
    best = grid[np.argmin([mape(true, c * pred) for c in grid])]
    assert mape(true, scale * pred) <= min(mape(true, c * pred) for c in grid) + 1e-12
    assert scale == pytest.approx(best, abs=0.02)
    assert scale < 1  # log-normal errors: the MAPE-optimal prediction lies below the median one


def test_weighted_median_and_exact_predictions():
    assert weighted_median(np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 5.0])) == 2.0
    true = np.array([1.0, 5.0, 30.0])
    assert mape_scale(true, true) == 1.0
    assert mape_scale(true, 2 * true) == 0.5
    fitted = fit_calibration(true, 2 * true)
    assert fitted.val_mape_raw == pytest.approx(1.0) and fitted.val_mape == 0 and fitted.n_val == 3


def test_no_usable_record_is_refused():
    with pytest.raises(ParaisiteError, match="no validation record"):
        mape_scale([1.0, 2.0], [-0.5, np.nan])


def test_calibrate_is_a_checked_boolean_for_kappa_fitted_on_validation_only():
    with pytest.raises(ConfigError, match="calibrate='yes' is not allowed"):
        chain.check_config(compose_cfg("finetune=dft", "calibrate=yes"))
    with pytest.raises(ConfigError, match="calibrate=true scales κ predictions"):
        chain.check_config(compose_cfg("backbone=magpie", "finetune=features", "data=crossprop/exfoliation_energy",
                                       "calibrate=true"))
    with pytest.raises(ConfigError, match="protocol=paper makes the test split"):
        chain.check_config(compose_cfg("finetune=dft", "protocol=paper", "calibrate=true"))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_calibrated_run_scales_the_same_model_by_its_validation_factor(tmp_path, mirror_records):
    overrides = ("finetune=dft", "data=dataset1", "protocol=cv", "fold=1")
    raw = chain.run(compose_cfg(*overrides), tmp_path / "raw")
    calibrated = chain.run(compose_cfg(*overrides, "calibrate=true"), tmp_path / "calibrated")
    assert raw["calibration"] is None
    assert calibrated["stages"][0]["reused_from"]  # the same trained stage, from the stage store
    val = read_csv(tmp_path / "calibrated" / "val_predictions.csv")
    assert val == read_csv(tmp_path / "raw" / "val_predictions.csv")  # validation predictions: not scaled
    true, pred = (np.array([float(r[k]) for r in val]) for k in ("target", "prediction"))
    scale = calibrated["calibration"]["scale"]
    assert scale == mape_scale(true, pred) and calibrated["calibration"]["n_val"] == len(val) > 0
    assert calibrated["calibration"]["val_mape"] <= calibrated["calibration"]["val_mape_raw"]
    test_raw, test_cal = (read_csv(tmp_path / run / "test_predictions.csv") for run in ("raw", "calibrated"))
    assert [r["id"] for r in test_raw] == [r["id"] for r in test_cal]
    np.testing.assert_allclose([float(r["prediction"]) for r in test_cal],
                               [scale * float(r["prediction"]) for r in test_raw], rtol=1e-6)
    # the factor travels with the model file: predict gives the scaled prediction
    (member,) = load_ensemble([tmp_path / "calibrated"])
    (plain,) = load_ensemble([tmp_path / "raw"])
    assert member.module.output_scale == scale and plain.module.output_scale == 1.0
    records = write_records(tmp_path / "in.json", mirror_records[:4])
    predict([records], [member], tmp_path / "cal.csv")
    predict([records], [plain], tmp_path / "raw.csv")
    np.testing.assert_allclose([float(r["kappa_mean"]) for r in read_csv(tmp_path / "cal.csv")],
                               [scale * float(r["kappa_mean"]) for r in read_csv(tmp_path / "raw.csv")], rtol=1e-6)
    assert json.loads((tmp_path / "calibrated" / "results.json").read_text())["calibration"]["scale"] == scale

