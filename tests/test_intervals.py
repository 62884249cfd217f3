"""Conformal prediction intervals for κ (paraisite.intervals)."""

import math

import numpy as np
import pytest

from paraisite.errors import ParaisiteError
from paraisite.intervals import Interval, conformal, coverage_out_of_fold


def test_the_interval_is_the_conformal_rank_of_the_log_residuals():
    true = np.full(9, 2.0)
    pred = 2.0 * np.exp(np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9]))
    interval = conformal(true, pred, 0.8, "nine")  # rank ⌈10 · 0.8⌉ = 8 of 9
    assert interval == Interval(0.8, pytest.approx(0.8), 9, "nine")
    lo, hi = interval.bounds(5.0)
    assert lo == pytest.approx(5.0 * math.exp(-0.8)) and hi == pytest.approx(5.0 * math.exp(0.8))
    assert Interval.from_json(interval.to_json()) == interval
    with pytest.raises(ParaisiteError, match=r"a 0.95 interval needs 0 < level < 1 and at least 19 calibration "
                                             r"materials \(nine: 9\)"):
        conformal(true, pred, 0.95, "nine")
    with pytest.raises(ParaisiteError, match="all > 0"):
        conformal(true, -pred, 0.5, "negative")


def test_out_of_fold_the_interval_covers_about_its_level():
    rng = np.random.default_rng(1)
    true = np.exp(rng.normal(2, 1, 2000))
    pred = true * np.exp(rng.normal(0, 0.4, 2000))
    check = coverage_out_of_fold(true, pred, 0.9)
    assert 0.88 <= check["coverage"] <= 0.93 and check["n"] == 2000
    assert check["width"] == pytest.approx(math.exp(2 * 1.645 * 0.4), rel=0.1)  # log-normal: ±1.645 σ
