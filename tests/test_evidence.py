"""Evidence: k-fold cross-validation, out-of-fold predictions, a cv grid point as the final ensemble, user-given test
files, shared stages."""

import csv
import json
from collections import Counter

import numpy as np
import pytest

from paraisite.chain import run
from paraisite.cli import main as cli
from paraisite.data.splits import split_indices
from paraisite.errors import ConfigError, ParaisiteError
from paraisite.recipe import check_config
from tests.conftest import write_records
from tests.helpers import compose_cfg


def test_cv_folds_partition_the_records_and_validation_comes_from_the_training_folds():
    n, folds = 23, 5
    tests = []
    for fold in range(folds):
        s = split_indices(n, seed=3, protocol="cv", val_fraction=0.2, folds=folds, fold=fold)
        assert not set(s["test"]) & (set(s["train"]) | set(s["val"])) and not set(s["train"]) & set(s["val"])
        assert len(s["train"]) + len(s["val"]) + len(s["test"]) == n and len(s["val"]) > 0
        tests += list(s["test"])
    assert sorted(tests) == list(range(n))  # each record is tested exactly once per repeat
    other_seed = split_indices(n, seed=4, protocol="cv", folds=folds, fold=0)["test"]
    assert set(other_seed) != set(split_indices(n, seed=3, protocol="cv", folds=folds, fold=0)["test"])
    holdout = split_indices(n, seed=3, protocol="holdout", test_fraction=0.2)
    assert list(holdout["test"]) == sorted(np.random.default_rng(3).permutation(n)[:5])  # holdout unchanged


def test_cv_validation_slices_are_disjoint_across_folds_and_the_leading_rule_is_kept():
    n, folds = 143, 5  # Dataset2's size: 17 validation records per fold
    vals = [set(split_indices(n, seed=1, protocol="cv", folds=folds, fold=f)["val"]) for f in range(folds)]
    assert sum(map(len, vals)) == len(set().union(*vals)) == 5 * 17  # disjoint: 85 records validate a search
    for fold, val in enumerate(vals):  # fold f validates on records of fold f+1, which it trains on otherwise
        assert val <= set(split_indices(n, seed=1, protocol="cv", folds=folds, fold=(fold + 1) % folds)["test"])
    leading = [split_indices(n, seed=1, protocol="cv", folds=folds, fold=f, cv_val_slice="leading") for f in range(5)]
    perm = np.random.default_rng(1).permutation(n)
    for fold, split in enumerate(leading):  # as before the rule had a name: the head of the rest of the permutation
        assert list(split["val"]) == sorted(perm[np.arange(n) % folds != fold][:17])
        assert list(split["test"]) == sorted(split_indices(n, seed=1, protocol="cv", folds=folds, fold=fold)["test"])
    assert len(set().union(*(set(s["val"]) for s in leading))) == 22  # nearly the same 17 records in every fold


@pytest.mark.parametrize("overrides,message", [
    (["protocol=cv"], "config (datamodule.folds=5): fold=None is not allowed (an integer ≥ 0, ≤ 4)"),
    (["protocol=cv", "fold=5"], "fold=5 is not allowed"),
    (["fold=1"], "fold=1 is for protocol=cv"),
])
def test_fold_is_checked_against_the_protocol(overrides, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg("finetune=dft", *overrides))
    assert message in str(err.value)


def read_predictions(folder):
    return list(csv.DictReader(open(folder / "test_predictions.csv")))


@pytest.mark.slow
def test_every_record_is_an_out_of_fold_prediction_exactly_once(tmp_path):
    seen = Counter()
    for fold in range(3):
        cfg = compose_cfg("protocol=cv", "datamodule.folds=3", f"fold={fold}", "finetune=dft", "data=dataset1",
                          "evaluate_on=[dataset1]")
        results = run(cfg, tmp_path / f"f{fold}")
        assert results["config"]["fold"] == fold
        rows = read_predictions(tmp_path / f"f{fold}")
        assert {r["fold"] for r in rows} == {str(fold)} and {r["seed"] for r in rows} == {"1"}
        assert len(rows) == results["test"]["dataset1"]["n"]
        seen.update(r["id"] for r in rows)
    assert len(seen) == 40 and set(seen.values()) == {1}  # smoke: the first 40 records, each tested once


@pytest.mark.slow
def test_a_cv_grid_point_is_the_ensemble_and_its_out_of_fold_error_is_reported(tmp_path, mirror_records):
    from omegaconf import OmegaConf

    sweep, fold_of = tmp_path / "sweep", {}
    for seed in (1, 2):
        for fold in (0, 1):
            folder = sweep / f"f{fold}-s{seed}"
            cfg = compose_cfg("protocol=cv", "datamodule.folds=2", f"fold={fold}", f"seed={seed}", "finetune=dft",
                              "data=dataset1", "evaluate_on=[dataset1]")
            run(cfg, folder)
            (folder / ".hydra").mkdir()
            OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")  # as Hydra leaves it: what rows are grouped on
            fold_of.update({(seed, r["id"]): folder.name for r in read_predictions(folder)})
    inputs = write_records(tmp_path / "d1.json", mirror_records[:40])  # smoke: the records the folds split
    assert cli(["predict", str(inputs), "--run", str(sweep), "--row", "dataset1 [cv]", "--output",
                str(tmp_path / "p.csv"), "--quiet"]) == 0
    predicted = {r["id"]: r for r in csv.DictReader(open(tmp_path / "p.csv")) if not r["flag"]}
    assert {c for c in next(iter(predicted.values())) if c.startswith("kappa_f")} == {
        f"kappa_f{f}-s{s}" for f in (0, 1) for s in (1, 2)}  # every fold model of every repeat
    # per material: the mean over seeds of the one fold model that never saw it, from the members' predictions
    ids = sorted({i for _, i in fold_of} & set(predicted))
    true = np.array([float(next(r["target"] for r in read_predictions(sweep / fold_of[1, i]) if r["id"] == i))
                     for i in ids])
    out_of_fold = np.array([np.mean([float(predicted[i][f"kappa_{fold_of[s, i]}"]) for s in (1, 2)]) for i in ids])
    assert cli(["report", str(sweep), "--output", str(tmp_path / "r")]) == 0
    (row,) = csv.DictReader(open(tmp_path / "r" / "table.csv"))
    assert float(row["dataset1_ensemble"]) == pytest.approx(float(np.mean(np.abs(out_of_fold - true) / true)), rel=1e-4)
    assert float(row["dataset1_ensemble_lo"]) < float(row["dataset1_ensemble"]) < float(row["dataset1_ensemble_hi"])
    assert "**Ensemble of the repeats, out of fold**" in (tmp_path / "r" / "table.md").read_text()


@pytest.mark.slow
def test_a_shared_stage_is_reused_and_gives_the_same_results(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAISITE_CACHE_DIR", str(tmp_path / "cache"))  # a stage store no other test has filled
    first = run(compose_cfg("data=dataset1"), tmp_path / "d1")
    second = run(compose_cfg("data=dataset2"), tmp_path / "d2")
    alone = run(compose_cfg("data=dataset2", "stage_cache=false"), tmp_path / "alone")
    assert "reused_from" not in first["stages"][0] and second["stages"][0]["reused_from"]
    assert "reused_from" not in second["stages"][1] and "reused_from" not in alone["stages"][0]
    assert second["test"] == alone["test"]
    assert (tmp_path / "d2" / "logs" / "agl" / "metrics.csv").is_file()  # the reused stage's curve travels along


@pytest.mark.slow
def test_a_user_test_file_scores_the_model(tmp_path, mirror_records):
    test_file = write_records(tmp_path / "held_out.json", mirror_records[-12:])
    results = run(compose_cfg("finetune=dft", "data=dataset1", f"data.test_file={test_file}"), tmp_path / "run")
    assert list(results["test"]) == ["held_out"] and results["test"]["held_out"]["n"] == 12
    assert results["test_file"] == str(test_file)
    rows = read_predictions(tmp_path / "run")
    assert {r["id"] for r in rows} == {r["id"] for r in mirror_records[-12:]} and {r["test_set"] for r in rows} == {"held_out"}
    (stage,) = results["stages"]
    assert stage["n_train"] + stage["n_val"] == 40 - stage["n_excluded_leakage"]  # no carved test split


def test_a_predict_file_trains_on_all_the_data_and_predicts_its_rows_in_order(tmp_path):
    blind = tmp_path / "formulas.csv"
    blind.write_text("formula\nMoS2\nXx2O\nBi2Te3\n")
    cfg = compose_cfg("backbone=magpie", "finetune=features", "data=crossprop/slme", f"data.predict_file={blind}",
                      "datamodule.limit=60")
    results = run(cfg, tmp_path / "run")
    assert results["test"] == {} and results["predict_file"] == str(blind)
    (stage,) = results["stages"]
    assert stage["n_train"] + stage["n_val"] == 60  # no test carved
    with open(tmp_path / "run" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["formula"] for r in rows] == ["MoS2", "", "Bi2Te3"] and [r["id"][-2:] for r in rows] == [":2", ":3", ":4"]
    assert rows[1]["prediction"] == "" and "formula 'Xx2O': unknown element Xx" in rows[1]["flag"]
    assert all(float(rows[i]["prediction"]) == float(rows[i]["prediction"]) for i in (0, 2))
    with pytest.raises(ParaisiteError, match="data.predict_file=.*missing.csv: no such file"):
        run(compose_cfg("backbone=magpie", "finetune=features", "data=crossprop/slme",
                        f"data.predict_file={tmp_path / 'missing.csv'}"), tmp_path / "missing")
    assert not (tmp_path / "missing" / "model.pt").exists()


def test_protocol_final_trains_on_all_the_data_and_scores_nothing(tmp_path, capsys):
    from paraisite.cli import main as cli

    results = run(compose_cfg("finetune=dft", "data=dataset1", "protocol=final"), tmp_path / "sweep" / "run")
    (stage,) = results["stages"]
    assert results["test"] == {} and stage["n_train"] + stage["n_val"] == 40 and stage["n_excluded_leakage"] == 0
    assert (tmp_path / "sweep" / "run" / "model.pt").is_file()
    assert cli(["report", str(tmp_path / "sweep"), "--output", str(tmp_path / "report")]) == 0


@pytest.mark.slow
def test_a_formula_test_file_for_a_composition_backbone_flags_bad_rows(tmp_path):
    test_file = tmp_path / "blind.csv"
    test_file.write_text("formula,target\nMoS2,1.5\nBi2Te3,0.2\nXx2O,1\n")
    cfg = compose_cfg("backbone=elemnet", "pretrain=scratch", "finetune=dft", "data=crossprop/exfoliation_energy",
                      f"data.test_file={test_file}", "datamodule.on_bad=skip")
    results = run(cfg, tmp_path / "run")
    assert results["test"]["blind"]["n"] == 2
    assert [r["formula"] for r in read_predictions(tmp_path / "run")] == ["MoS2", "Bi2Te3"]
    strict = compose_cfg("backbone=elemnet", "pretrain=scratch", "finetune=dft", "data=crossprop/exfoliation_energy",
                         f"data.test_file={test_file}")
    with pytest.raises(Exception, match=r"blind\.csv: 1 bad record\(s\): .*unknown element Xx"):
        run(strict, tmp_path / "strict")
    assert json.loads(json.dumps(results))["test_file"].endswith("blind.csv")
