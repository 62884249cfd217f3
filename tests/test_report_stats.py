"""`paraisite report` statistics: cv rows on pooled out-of-fold predictions with bootstrap intervals, incomplete
repeats, paired comparisons (`--compare`). Fake run folders, no training."""

import copy
import csv
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from paraisite.data.splits import split_indices
from paraisite.errors import ParaisiteError
from paraisite.metrics import regression_metrics
from paraisite.report import (
    committee,
    compare,
    experts,
    find_row,
    find_runs,
    label,
    markdown,
    row_runs,
    selected,
    summarize,
    validation_mean,
)
from paraisite.runlock import RunLock
from paraisite.stats import batch_metric
from tests.helpers import cfg_of

FOLDS, SEEDS = 3, (1, 2)


def materials(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n material ids and κ values (log-distributed)."""
    return np.array([f"m-{i:04d}" for i in range(n)]), np.round(np.random.default_rng(seed).lognormal(1, 1, n), 3)


def predictions(true: np.ndarray, error: float, seed: int) -> np.ndarray:
    """κ with a relative error of about `error` (±, random sign), one draw per seed."""
    rng = np.random.default_rng(100 + seed)
    return true * (1 + error * rng.choice([-1, 1], len(true)) * rng.uniform(0.5, 1.5, len(true)))


@functools.cache
def cv_base_config(pretrain: str, data: str):
    return cfg_of(f"pretrain={pretrain}", "finetune=dft", f"data={data}", "protocol=cv", f"datamodule.folds={FOLDS}")


def cv_config(pretrain: str, data: str, seed: int, fold: int):
    """The resolved config of a cv fold run (composed once per pretrain and data set)."""
    config = copy.deepcopy(cv_base_config(pretrain, data))
    config.seed, config.fold = seed, fold
    return config


def fake_cv_run(folder, pretrain, seed, fold, ids, true, pred, status="ok", extra=(), val=None):
    """A fold run as the chain leaves it: .hydra/config.yaml, results.json, test_predictions.csv (test set
    dataset1: this seed's fold `fold` of the records); `extra`: more prediction rows; `val`: its final stage's best
    validation MAPE (None: no stage record)."""
    from omegaconf import OmegaConf

    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cv_config(pretrain, "dataset1", seed, fold), folder / ".hydra" / "config.yaml")
    if status == "crashed":
        return
    test = split_indices(len(ids), seed, "cv", folds=FOLDS, fold=fold)["test"]
    config = {"backbone": "megnet", "pretrain": pretrain, "finetune": "dft", "data": "dataset1", "seed": seed,
              "protocol": "cv", "fold": fold}
    metrics = regression_metrics(true[test], pred[test], "kappa")
    (folder / "results.json").write_text(json.dumps({
        "status": status, "config": config, "test": {"dataset1": metrics} if status == "ok" else {},
        "target": {"kind": "kappa", "name": "kappa", "unit": "W/mK"},
        "stages": [] if val is None else [{"name": "dft", "best_val_mape": val}]}))
    rows = [(ids[i], "X", "dataset1", fold, seed, true[i], pred[i]) for i in test] + list(extra)
    with open(folder / "test_predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "formula", "test_set", "fold", "seed", "target", "prediction"])
        writer.writerows(rows)


def cv_grid(root, rows: dict[str, float], n: int = 40, skip=()):
    """A cv sweep: one row per pretrain ({pretrain: relative error}) × FOLDS folds × SEEDS; `skip`: (pretrain,
    seed, fold) runs that crashed. Returns {(pretrain, seed): (ids, true, pred)}."""
    ids, true = materials(n)
    made = {}
    for pretrain, error in rows.items():
        for seed in SEEDS:
            pred = predictions(true, error, seed)
            made[pretrain, seed] = ids, true, pred
            for fold in range(FOLDS):
                status = "crashed" if (pretrain, seed, fold) in skip else "ok"
                fake_cv_run(root / f"{pretrain}-s{seed}-f{fold}", pretrain, seed, fold, ids, true, pred, status)
    return made


def row_of(rows, pretrain):
    (row,) = [r for r in rows if r["pretrain"] == pretrain]
    return row


@pytest.mark.parametrize("metric", ["mape", "spearman"])
def test_a_cv_row_scores_the_pooled_out_of_fold_predictions(tmp_path, metric):
    made = cv_grid(tmp_path, {"eform": 0.2, "scratch": 0.5})
    rows = summarize(find_runs([tmp_path]), metric)
    row = row_of(rows, "eform")
    pooled = [regression_metrics(made["eform", s][1], made["eform", s][2])[metric] for s in SEEDS]  # by hand
    assert row["dataset1_mean"] == pytest.approx(np.mean(pooled), rel=1e-9)
    assert row["dataset1_std"] == pytest.approx(np.std(pooled, ddof=1), rel=1e-9)
    folds = [json.loads((tmp_path / f"eform-s{s}-f{f}" / "results.json").read_text())["test"]["dataset1"][metric]
             for s in SEEDS for f in range(FOLDS)]
    assert row["dataset1_mean"] != pytest.approx(np.mean(folds), rel=1e-6)  # not a mean of fold metrics
    assert (row["folds"], row["dataset1_n"], row["seeds"], row["incomplete"]) == (FOLDS, 2, [1, 2], "")
    assert row["dataset1_lo"] < row["dataset1_mean"] < row["dataset1_hi"]
    assert row["dataset2_n"] == 0 and np.isnan(row["dataset2_mean"])


def test_a_cv_row_scores_the_out_of_fold_ensemble_of_its_repeats(tmp_path):
    made = cv_grid(tmp_path, {"eform": 0.3, "scratch": 0.3}, skip={("scratch", 2, 0)})
    rows = summarize(find_runs([tmp_path]))
    row = row_of(rows, "eform")
    _, true, _ = made["eform", 1]
    out_of_fold = np.mean([made["eform", s][2] for s in SEEDS], axis=0)  # per material: its seeds' fold models
    assert row["dataset1_ensemble"] == pytest.approx(regression_metrics(true, out_of_fold)["mape"], rel=1e-9)
    assert row["dataset1_ensemble"] < row["dataset1_mean"]  # averaging two seeds' errors
    assert row["dataset1_ensemble_lo"] < row["dataset1_ensemble"] < row["dataset1_ensemble_hi"]
    incomplete = row_of(rows, "scratch")  # seed 2 lacks a fold: the ensemble holds seed 1 alone
    assert incomplete["dataset1_ensemble"] == pytest.approx(incomplete["dataset1_mean"])
    table = markdown(rows, "mape")
    assert "**Ensemble of the repeats, out of fold**" in table
    assert re.search(r"\| megnet/eform/dft/dataset1 \[cv\] \| \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \(2\) \| — \|", table)


def test_a_row_names_its_finished_runs_for_an_ensemble(tmp_path):
    cv_grid(tmp_path, {"eform": 0.3, "scratch": 0.3}, skip={("scratch", 2, 0)})
    name, runs = row_runs([tmp_path], "scratch")
    assert name == "megnet/scratch/dft/dataset1 [cv]"
    assert sorted(Path(r).name for r in runs) == [f"scratch-s{s}-f{f}" for s in SEEDS for f in range(FOLDS)
                                                  if (s, f) != (2, 0)]
    with pytest.raises(ParaisiteError, match=r"--row 'megnet' names 2 rows"):
        row_runs([tmp_path], "megnet")


def test_the_interval_shrinks_with_more_materials(tmp_path):
    widths = []
    for n in (30, 300):
        cv_grid(tmp_path / str(n), {"eform": 0.3}, n=n)
        (row,) = summarize(find_runs([tmp_path / str(n)]))
        assert row["dataset1_lo"] < row["dataset1_mean"] < row["dataset1_hi"]
        widths.append(row["dataset1_hi"] - row["dataset1_lo"])
    assert widths[1] < 0.6 * widths[0]  # ~1/√10 in theory


def test_the_interval_is_reproducible(tmp_path):
    cv_grid(tmp_path, {"eform": 0.3})
    first, second = summarize(find_runs([tmp_path])), summarize(find_runs([tmp_path]))
    assert (first[0]["dataset1_lo"], first[0]["dataset1_hi"]) == (second[0]["dataset1_lo"], second[0]["dataset1_hi"])


def test_an_incomplete_repeat_is_flagged_and_left_out(tmp_path):
    made = cv_grid(tmp_path, {"eform": 0.2}, skip={("eform", 2, 1)})
    (row,) = summarize(find_runs([tmp_path]))
    assert row["dataset1_n"] == 1 and row["n_failed"] == 1
    assert row["dataset1_mean"] == pytest.approx(regression_metrics(*made["eform", 1][1:])["mape"])
    assert row["incomplete"] == "seed 2: 2 of 3 folds (fold 1 failed or missing)"
    with RunLock(tmp_path / "eform-s2-f1"):  # the same fold still in progress: running, not failed
        (running,) = summarize(find_runs([tmp_path]))
        assert running["incomplete"] == "seed 2: 2 of 3 folds (fold 1 running)" and running["n_failed"] == 0
    table = markdown([row], "mape")
    assert re.search(r"\| \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \(3×1, 1 incomplete\) \|", table)
    assert "**Incomplete repeats** (left out of the means):\n- megnet/eform/dft/dataset1 [cv]: seed 2: 2 of 3 folds" in table


def test_a_repeat_with_a_fold_without_predictions_is_incomplete(tmp_path):
    cv_grid(tmp_path, {"eform": 0.2})
    (tmp_path / "eform-s1-f0" / "test_predictions.csv").unlink()
    (row,) = summarize(find_runs([tmp_path]))
    assert row["dataset1_n"] == 1 and "seed 1: 2 of 3 folds (fold 0 without test_predictions.csv)" in row["incomplete"]


def test_an_id_predicted_twice_in_a_repeat_is_refused(tmp_path):
    ids, true = materials(40)
    pred = predictions(true, 0.2, 1)
    held = split_indices(40, 1, "cv", folds=FOLDS, fold=0)["test"][0]  # a fold-0 record, also in fold 1's file
    for fold in range(FOLDS):
        extra = [(ids[held], "X", "dataset1", fold, 1, true[held], pred[held])] if fold == 1 else []
        fake_cv_run(tmp_path / f"f{fold}", "eform", 1, fold, ids, true, pred, extra=extra)
    with pytest.raises(ParaisiteError, match=rf"seed 1, test set dataset1: 1 id\(s\) predicted more than once "
                                             rf"\({ids[held]}; {ids[held]} in .*f0 and .*f1\)"):
        summarize(find_runs([tmp_path]))


def test_two_finished_runs_of_one_seed_and_fold_are_refused(tmp_path):
    cv_grid(tmp_path / "a", {"eform": 0.2})
    cv_grid(tmp_path / "b", {"eform": 0.2})
    with pytest.raises(ParaisiteError, match="two finished runs of the same configuration with seed 1 and fold 0"):
        summarize(find_runs([tmp_path]))


def test_compare_a_better_row(tmp_path):
    cv_grid(tmp_path, {"eform": 0.1, "scratch": 0.4})
    rows = summarize(find_runs([tmp_path]))
    (result,) = compare(rows, "megnet/eform/dft/dataset1", "scratch", "mape")
    assert (result["a"], result["b"]) == ("megnet/eform/dft/dataset1 [cv]", "megnet/scratch/dft/dataset1 [cv]")
    assert result["diff"] == pytest.approx(row_of(rows, "eform")["dataset1_mean"] - row_of(rows, "scratch")["dataset1_mean"])
    assert result["diff"] < 0 and result["ci_lo"] < result["diff"] < result["ci_hi"] < 0
    assert result["p"] < 0.01 and (result["n_materials"], result["n_repeats"], result["seeds"]) == (40, 2, "1 2")
    (reverse,) = compare(rows, "scratch", "eform", "mape")
    assert reverse["diff"] == pytest.approx(-result["diff"]) and reverse["ci_lo"] > 0


@pytest.mark.parametrize("metric", ["mape", "spearman"])
def test_compare_identical_rows(tmp_path, metric):
    cv_grid(tmp_path, {"eform": 0.3, "gap": 0.3})  # same predictions under two configurations
    (result,) = compare(summarize(find_runs([tmp_path]), metric), "eform", "gap", metric)
    assert result["diff"] == 0 and result["ci_lo"] <= 0 <= result["ci_hi"] and result["p"] == 1


def test_compare_pairs_only_common_materials_and_complete_repeats(tmp_path):
    cv_grid(tmp_path, {"eform": 0.1, "scratch": 0.4}, skip={("scratch", 2, 0)})
    (result,) = compare(summarize(find_runs([tmp_path])), "eform", "scratch", "mae")
    assert (result["n_repeats"], result["seeds"]) == (1, "1")


def test_compare_refuses_unknown_or_ambiguous_rows(tmp_path):
    cv_grid(tmp_path, {"eform": 0.1, "scratch": 0.4})
    rows = summarize(find_runs([tmp_path]))
    with pytest.raises(ParaisiteError, match=r"--compare 'gap': no row is labelled so; the rows are: megnet/eform"):
        compare(rows, "gap", "eform", "mape")
    with pytest.raises(ParaisiteError, match=r"--compare 'megnet' names 2 rows"):
        compare(rows, "megnet", "eform", "mape")


def test_a_committee_averages_the_rows_own_ensembles_out_of_fold(tmp_path):
    made = cv_grid(tmp_path, {"eform": 0.1, "scratch": 0.5, "gap": 0.3}, skip={("gap", 2, 1)})
    rows = summarize(find_runs([tmp_path]))
    row, results = committee(rows, ["eform", "scratch", "gap"], "mape")
    _, true, _ = made["eform", 1]
    own = {p: np.mean([made[p, s][2] for s in SEEDS], axis=0) for p in ("eform", "scratch")}
    own["gap"] = made["gap", 1][2]  # seed 2 is incomplete: the row's ensemble is seed 1 alone
    joint = np.mean(list(own.values()), axis=0)  # each row weighted alike, not each repeat
    assert [r["member"] for r in results] == [f"megnet/{p}/dft/dataset1 [cv]" for p in ("eform", "scratch", "gap")]
    assert [r["committee_value"] for r in results] == [pytest.approx(regression_metrics(true, joint)["mape"])] * 3
    by_member = {r["member"].split("/")[1]: r for r in results}
    for pretrain, alone in own.items():
        assert by_member[pretrain]["member_value"] == pytest.approx(regression_metrics(true, alone)["mape"])
    assert by_member["scratch"]["diff"] < 0 and by_member["scratch"]["ci_hi"] < 0  # better than its worst member
    assert by_member["eform"]["diff"] > 0  # and worse than its best: averaging is no free lunch
    assert [by_member[p]["member_repeats"] for p in ("eform", "scratch", "gap")] == [2, 2, 1]
    assert {(r["n_materials"], r["test_set"]) for r in results} == {(40, "dataset1")}
    assert row["dataset1_mean"] == results[0]["committee_value"]
    assert label(row) == "committee: " + " + ".join(f"megnet/{p}/dft/dataset1 [cv]" for p in ("eform", "scratch", "gap"))
    (alone,) = compare(rows + [row], "committee: megnet/eform", "megnet/scratch/dft/dataset1 [cv]", "mape")
    assert alone["diff"] == pytest.approx(by_member["scratch"]["diff"])  # a committee is paired with ensembles
    other, _ = committee(rows, ["eform", "scratch"], "mape")
    (pair,) = compare(rows + [row, other], "committee: megnet/eform/dft/dataset1 [cv] + megnet/scratch/dft/dataset1 [cv] +",
                      "committee: megnet/eform/dft/dataset1 [cv] + megnet/scratch/dft/dataset1 [cv]", "mape")
    assert pair["diff"] == pytest.approx(row["dataset1_mean"] - other["dataset1_mean"]) and pair["n_materials"] == 40
    assert find_row(rows + [row], "scratch") is row_of(rows, "scratch")  # a member's name does not name its committee
    with pytest.raises(ParaisiteError, match="a committee needs two rows or more"):
        committee(rows, ["eform"], "mape")
    with pytest.raises(ParaisiteError, match="names one row twice"):
        committee(rows, ["eform", "megnet/eform/dft/dataset1 [cv]"], "mape")
    with pytest.raises(ParaisiteError, match=r"--committee 'elemnet': no row is labelled so"):
        committee(rows, ["eform", "elemnet"], "mape")


def test_the_recipe_chosen_per_fold_on_validation_predicts_that_folds_test_materials(tmp_path):
    ids, true = materials(40)
    error = {"eform": 0.1, "scratch": 0.5, "gap": 0.3}
    winner = {(s, f): ("scratch" if (s, f) == (1, 0) else "gap" if f == 2 else "eform") for s in SEEDS
              for f in range(FOLDS)}  # the candidate that validates best; not always the best on test
    for pretrain, e in error.items():
        for seed in SEEDS:
            for fold in range(FOLDS):
                fake_cv_run(tmp_path / f"{pretrain}-s{seed}-f{fold}", pretrain, seed, fold, ids, true,
                            predictions(true, e, seed), val=0.1 if winner[seed, fold] == pretrain else 0.2)
    rows = summarize(find_runs([tmp_path]), n_boot=1)
    row = selected(rows, ["eform", "scratch", "gap"], "mape", n_boot=1)
    assert label(row) == "selected on validation: " + " or ".join(f"megnet/{p}/dft/dataset1 [cv]" for p in error)
    assert row["picks"] == {f"megnet/{p}/dft/dataset1 [cv]": n for p, n in (("eform", 3), ("scratch", 1), ("gap", 2))}
    expected = []
    for seed in SEEDS:  # each fold's test materials predicted by that fold's winner
        pred = np.empty(len(ids))
        for fold in range(FOLDS):
            test = split_indices(len(ids), seed, "cv", folds=FOLDS, fold=fold)["test"]
            pred[test] = predictions(true, error[winner[seed, fold]], seed)[test]
        expected.append(regression_metrics(true, pred)["mape"])
    assert row["dataset1_mean"] == pytest.approx(np.mean(expected)) and row["val_mean"] == pytest.approx(0.1)
    assert row_of(rows, "eform")["dataset1_mean"] < row["dataset1_mean"] < row_of(rows, "scratch")["dataset1_mean"]
    (versus,) = compare(rows + [row], "selected on validation", "megnet/eform/dft/dataset1 [cv]", "mape", 200, 200)
    assert versus["diff"] > 0 and versus["n_materials"] == 40 and versus["n_repeats"] == 2
    with pytest.raises(ParaisiteError, match="a choice needs two rows or more"):
        selected(rows, ["eform"], "mape")
    from paraisite.cli import main as cli

    assert cli(["report", str(tmp_path), "--output", str(tmp_path / "r"), "--select", "eform", "scratch", "gap",
                "--committee", "selected on validation", "scratch"]) == 0
    assert "| megnet/scratch/dft/dataset1 [cv] | 1 of 6 |" in (tmp_path / "r" / "selections.md").read_text()
    assert "selected on validation" in (tmp_path / "r" / "committees.md").read_text()


def test_a_choice_on_validation_refuses_candidates_validated_on_other_records(tmp_path):
    source_grid(tmp_path, {"dataset1": 0.1, "dataset2": 0.2, "mix": 0.4})
    rows = summarize(find_runs([tmp_path]), n_boot=1)
    with pytest.raises(ParaisiteError, match="the candidates train on dataset1, dataset2: their validation scores"):
        selected(rows, ["dft/dataset1", "dft/dataset2"], "mape")
    ids, true = materials(40)
    for pretrain, kept in (("eform", 8), ("scratch", 6)):  # e.g. a composition backbone that drops records
        for seed in SEEDS:
            for fold in range(FOLDS):
                run = tmp_path / "same" / f"{pretrain}-s{seed}-f{fold}"
                fake_cv_run(run, pretrain, seed, fold, ids, true, true, val=0.1)
                (run / "val_predictions.csv").write_text("id,prediction\n" + "".join(f"{i},1\n" for i in ids[:kept]))
    rows = summarize(find_runs([tmp_path / "same"]), n_boot=1)
    with pytest.raises(ParaisiteError, match=r"seed 1, fold 0: the candidates validate on other records "
                                             r"\(megnet/eform/dft/dataset1 \[cv\]: 8, megnet/scratch/dft/dataset1 \[cv\]: 6\)"):
        selected(rows, ["eform", "scratch"], "mape")


def source_grid(root, error: dict[str, float]) -> dict:
    """cv runs trained on dataset1 (30 records), dataset2 (40) and mix (both, split per source as the data module
    does): each predicts its fold's test records of every set it covers, κ with a relative error `error[data]`.
    Returns {(data, seed): {source: (ids, true, pred)}}."""
    from omegaconf import OmegaConf

    sets = {"dataset1": materials(30, seed=1), "dataset2": materials(40, seed=2)}
    sets = {name: (np.char.add(f"{name}:", ids), true) for name, (ids, true) in sets.items()}
    made = {}
    for data, sources in (("dataset1", ["dataset1"]), ("dataset2", ["dataset2"]), ("mix", ["dataset1", "dataset2"])):
        for seed in SEEDS:
            made[data, seed] = {s: (*sets[s], predictions(sets[s][1], error[data], seed)) for s in sources}
            for fold in range(FOLDS):
                folder = root / f"{data}-s{seed}-f{fold}"
                (folder / ".hydra").mkdir(parents=True)
                OmegaConf.save(cv_config("eform", data, seed, fold), folder / ".hydra" / "config.yaml")
                rows = []
                for source in sources:
                    ids, true, pred = made[data, seed][source]
                    test = split_indices(len(ids), seed, "cv", folds=FOLDS, fold=fold)["test"]
                    tests = [source] + (["mix"] if data == "mix" else [])
                    rows += [(ids[i], "X", t, fold, seed, true[i], pred[i]) for t in tests for i in test]
                (folder / "results.json").write_text(json.dumps({
                    "status": "ok", "config": {"backbone": "megnet", "pretrain": "eform", "finetune": "dft",
                                               "data": data, "seed": seed, "protocol": "cv", "fold": fold},
                    "test": {}, "target": {"kind": "kappa", "name": "kappa", "unit": "W/mK"}, "stages": []}))
                with open(folder / "test_predictions.csv", "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["id", "formula", "test_set", "fold", "seed", "target", "prediction"])
                    writer.writerows(rows)
    return made


def test_per_source_experts_predict_each_material_of_the_union_with_its_own_sets_row(tmp_path):
    made = source_grid(tmp_path, {"dataset1": 0.1, "dataset2": 0.2, "mix": 0.4})
    rows = summarize(find_runs([tmp_path]))
    row = experts(rows, ["dft/dataset1", "dft/dataset2"], "mape")
    assert label(row) == "megnet/eform/dft/dataset1|dataset2 [cv] (per-source experts)"
    expected = {}
    for seed in SEEDS:  # on mix: dataset1's records by the dataset1 row, dataset2's by the dataset2 row
        true, pred = (np.concatenate([made[data, seed][data][k] for data in ("dataset1", "dataset2")]) for k in (1, 2))
        expected[seed] = regression_metrics(true, pred)["mape"]
    assert row["mix_mean"] == pytest.approx(np.mean(list(expected.values())))
    assert row["dataset1_mean"] == pytest.approx(row_of_data(rows, "dataset1")["dataset1_mean"])
    assert np.isnan(row["agl_mean"]) and row["seeds"] == [1, 2] and row["mix_lo"] < row["mix_mean"] < row["mix_hi"]
    (mix,) = [c for c in compare(rows + [row], "per-source experts", "dft/mix", "mape") if c["test_set"] == "mix"]
    assert mix["n_materials"] == 70 and mix["diff"] < 0 and mix["ci_hi"] < 0  # the union's row errs 0.4, experts ≤ 0.2
    assert "| megnet/eform/dft/dataset1|dataset2 [cv] (per-source experts) |" in markdown(rows + [row], "mape")
    with pytest.raises(ParaisiteError, match="experts need two rows or more"):
        experts(rows, ["dft/dataset1"], "mape")
    with pytest.raises(ParaisiteError, match=r"dft/dataset1 \[cv\] and megnet/eform/dft/mix \[cv\] both train on dataset1"):
        experts(rows, ["dft/dataset1", "dft/mix"], "mape")


def test_the_cli_adds_experts_rows_that_comparisons_and_committees_name(tmp_path):
    from paraisite.cli import main as cli

    source_grid(tmp_path / "sweep", {"dataset1": 0.1, "dataset2": 0.2, "mix": 0.4})
    assert cli(["report", str(tmp_path / "sweep"), "--output", str(tmp_path / "r"),
                "--experts", "dft/dataset1", "dft/dataset2", "--compare", "per-source experts", "dft/mix",
                "--committee", "per-source experts", "dft/mix"]) == 0
    table = {r["data"]: r for r in csv.DictReader(open(tmp_path / "r" / "table.csv"))}
    assert float(table["dataset1|dataset2"]["mix_mean"]) < float(table["mix"]["mix_mean"])
    compared = [r for r in csv.DictReader(open(tmp_path / "r" / "comparisons.csv")) if r["test_set"] == "mix"]
    assert compared[0]["a"].endswith("(per-source experts)") and float(compared[0]["diff"]) < 0
    assert {r["test_set"] for r in csv.DictReader(open(tmp_path / "r" / "committees.csv"))} == {"dataset1", "dataset2",
                                                                                              "mix"}


def row_of_data(rows, data):
    (row,) = [r for r in rows if r["data"] == data]
    return row


def test_source_training_settings_split_rows_only_of_backbones_that_train_a_source(tmp_path):
    from omegaconf import OmegaConf

    cv_grid(tmp_path, {"eform": 0.2})
    for folder in tmp_path.glob("eform-s2-f*"):  # seed 2 ran after a change of the source-training defaults
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        cfg.source_training.epochs = 7
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    (row,) = summarize(find_runs([tmp_path]))  # MEGNet starts from published weights: the setting does nothing
    assert row["seeds"] == [1, 2] and row["dataset1_n"] == 2
    for folder in tmp_path.glob("eform-s*-f*"):
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        cfg.backbone._target_ = "paraisite.models.elemnet.ElemNetBackbone"
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    assert len(summarize(find_runs([tmp_path]))) == 2  # ElemNet trains its source with them: two configurations


def test_cv_runs_from_before_the_validation_slice_key_form_a_row_of_the_leading_rule(tmp_path):
    from omegaconf import OmegaConf

    cv_grid(tmp_path, {"eform": 0.2})
    for folder in tmp_path.glob("eform-s2-f*"):  # seed 2 ran before the key: it validated on the leading slice
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        del cfg.datamodule.cv_val_slice
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    assert sorted(len(r["seeds"]) for r in summarize(find_runs([tmp_path]))) == [1, 1]  # another recipe: 2 rows
    for folder in tmp_path.glob("eform-s1-f*"):
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        cfg.datamodule.cv_val_slice = "leading"
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    (row,) = summarize(find_runs([tmp_path]))  # the same rule, named or not: one row
    assert row["seeds"] == [1, 2]


def test_a_row_shows_its_mean_validation_score():
    runs = [{"target": {"kind": "kappa", "name": "kappa", "unit": "W/mK"}, "stages": [{"best_val_mape": v}]}
            for v in (0.2, 0.4)]
    assert validation_mean(runs) == pytest.approx(0.3)
    assert validation_mean(runs + [{"stages": []}]) == pytest.approx(0.3)  # a run without stage records: skipped
    assert np.isnan(validation_mean([{"stages": []}]))


def fake_holdout_run(folder, pretrain, seed, true, pred, with_predictions=True):
    from omegaconf import OmegaConf

    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg_of(f"pretrain={pretrain}", "finetune=dft", "data=dataset1", f"seed={seed}"),
                   folder / ".hydra" / "config.yaml")
    config = {"backbone": "megnet", "pretrain": pretrain, "finetune": "dft", "data": "dataset1", "seed": seed,
              "protocol": "holdout", "fold": None}
    (folder / "results.json").write_text(json.dumps({"status": "ok", "config": config, "stages": [],
                                                     "test": {"dataset1": regression_metrics(true, pred)}}))
    if with_predictions:
        with open(folder / "test_predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "formula", "test_set", "fold", "seed", "target", "prediction"])
            writer.writerows((f"m-{i}", "X", "dataset1", "", seed, t, p) for i, (t, p) in enumerate(zip(true, pred)))


def test_holdout_rows_keep_mean_std_and_compare_on_their_predictions(tmp_path):
    _, true = materials(30)
    for seed in SEEDS:
        fake_holdout_run(tmp_path / f"e{seed}", "eform", seed, true, predictions(true, 0.1, seed))
        fake_holdout_run(tmp_path / f"s{seed}", "scratch", seed, true, predictions(true, 0.5, seed))
    rows = summarize(find_runs([tmp_path]))
    assert re.search(r"\| megnet \| eform \| dft \| dataset1 \| holdout \| \d\.\d\d \(\d\.\d\d\) \|", markdown(rows, "mape"))
    (result,) = compare(rows, "eform", "scratch", "mape")
    assert result["ci_hi"] < 0 and result["n_materials"] == 30
    (tmp_path / "s2" / "test_predictions.csv").unlink()
    with pytest.raises(ParaisiteError, match=r"megnet/scratch/dft/dataset1: .*s2 has no test_predictions.csv"):
        compare(summarize(find_runs([tmp_path])), "eform", "scratch", "mape")


def test_the_cli_prints_intervals_and_comparisons(tmp_path, capsys):
    from paraisite.cli import main as cli

    cv_grid(tmp_path / "sweep", {"eform": 0.1, "scratch": 0.4}, skip={("scratch", 1, 2)})
    out = tmp_path / "r"
    assert cli(["report", str(tmp_path / "sweep"), "--output", str(out),
                "--compare", "megnet/eform/dft/dataset1", "megnet/scratch/dft/dataset1",
                "--committee", "eform", "scratch"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| megnet \| eform \| dft \| dataset1 \| cv \| \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \(3×2\) \|", printed)
    assert re.search(r"\(3×1, 1 incomplete\)", printed)
    assert re.search(r"\| megnet/eform/dft/dataset1 \[cv\] \| megnet/scratch/dft/dataset1 \[cv\] \| dataset1 \| "
                     r"\d\.\d{3} \| \d\.\d{3} \| -\d\.\d{3} \[-\d\.\d{3}, -\d\.\d{3}\] \| 0\.0\d{3} \| 40 \| 1 \|", printed)
    assert re.search(r"\| megnet/eform/dft/dataset1 \[cv\] \+ megnet/scratch/dft/dataset1 \[cv\] \| dataset1 \| "
                     r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \| megnet/eform/dft/dataset1 \[cv\] \| \d\.\d{3} \(2\) \|", printed)
    for name in ("table.csv", "table.md", "heatmap.png", "comparisons.md", "comparisons.csv", "committees.md",
                 "committees.csv"):
        assert (out / name).stat().st_size > 0
    table = {r["pretrain"]: r for r in csv.DictReader(open(out / "table.csv"))}
    assert table["eform"]["folds"] == "3" and float(table["eform"]["dataset1_lo"]) < float(table["eform"]["dataset1_hi"])
    (compared,) = csv.DictReader(open(out / "comparisons.csv"))
    assert float(compared["diff"]) < 0 and float(compared["p"]) < 0.01
    assert cli(["report", str(tmp_path / "sweep"), "--output", str(tmp_path / "r2"), "--compare", "gap", "eform"]) == 2
    assert "--compare 'gap': no row is labelled so" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()  # refused before writing


def test_batch_metrics_equal_regression_metrics_on_the_resampled_records():
    rng = np.random.default_rng(3)
    true = np.round(rng.lognormal(1, 1, 25), 1)
    pred = np.round(true * rng.lognormal(0, 0.3, 25), 1)
    true[3], pred[5] = true[4], pred[6]  # ties
    weights = rng.integers(0, 3, size=(6, 25))
    batch = np.stack([pred, pred[::-1], np.round(pred)])
    for kind, metrics in (("kappa", ("mape", "mae", "log_mae", "log_rmse", "r2", "spearman")),
                          ("generic", ("mae", "rmse", "r2", "spearman"))):
        for metric in metrics:
            expected = [regression_metrics(np.repeat(true, w), np.repeat(pred, w), kind)[metric] for w in weights]
            assert batch_metric(metric, kind, true, pred, weights) == pytest.approx(expected), metric
            assert batch_metric(metric, kind, true, batch) == pytest.approx(
                [regression_metrics(true, p, kind)[metric] for p in batch]), metric


def test_runs_from_before_an_added_stage_key_share_a_row_with_runs_at_its_neutral_value(tmp_path):
    from omegaconf import OmegaConf

    cv_grid(tmp_path, {"eform": 0.2})
    for folder in tmp_path.glob("eform-s2-f*"):  # seed 2 ran before `ema_epochs` existed
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        del cfg.stage_defaults.ema_epochs, cfg.stage_overrides.ema_epochs
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    (row,) = summarize(find_runs([tmp_path]))
    assert row["seeds"] == [1, 2]
    for folder in tmp_path.glob("eform-s1-f*"):  # a real change of the key: another row
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        cfg.stage_overrides.ema_epochs = 5
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    assert len(summarize(find_runs([tmp_path]))) == 2


def test_the_recipe_of_a_dataset_the_chain_does_not_train_on_does_not_split_a_row(tmp_path):
    from omegaconf import OmegaConf

    cv_grid(tmp_path, {"eform": 0.2})  # finetune=dft on dataset1: the AGL recipe is not used
    for folder in tmp_path.glob("eform-s2-f*"):
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        cfg.stage_by_data.agl.epochs = 30
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    (row,) = summarize(find_runs([tmp_path]))
    assert row["seeds"] == [1, 2]
    for folder in tmp_path.glob("eform-s2-f*"):  # a recipe of the dataset it trains on: another row
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        cfg.stage_by_data.dataset1 = {"epochs": 30}
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    assert len(summarize(find_runs([tmp_path]))) == 2


def test_a_pair_pooled_over_fold_sets_is_the_mean_of_each_materials_paired_differences():
    """`stats.paired` with one repeat per fold set (`scripts/paired_ensembles.py --also`): the difference is the mean
    over materials of their mean APE difference, its interval holds it, and a pair with no difference reads 0."""
    from paraisite.stats import Repeat, paired, rng_for

    ids, true = np.array(["a", "b", "c", "d"]), np.array([1.0, 2.0, 4.0, 8.0])
    first = (Repeat(1, ids, true, true * [1.5, 1.0, 1.2, 0.5]), Repeat(1, ids, true, true * [1.1, 1.3, 1.2, 0.9]))
    second = (Repeat(2, ids, true, true * [1.0, 1.0, 2.0, 1.0]), Repeat(2, ids, true, true * [1.2, 1.1, 1.4, 0.8]))
    r = paired([first[0], second[0]], [first[1], second[1]], "mape", "kappa", rng_for("pool", "test"))
    per_material = (np.array([0.5, 0.0, 0.2, 0.5]) - [0.1, 0.3, 0.2, 0.1] + [0.0, 0.0, 1.0, 0.0]
                    - np.array([0.2, 0.1, 0.4, 0.2])) / 2
    assert r["diff"] == pytest.approx(per_material.mean()) and r["lo"] <= r["diff"] <= r["hi"]
    assert r["n_materials"] == 4
    same = paired([first[0], second[0]], [first[0], second[0]], "mape", "kappa", rng_for("pool", "same"))
    assert same["diff"] == 0.0 and same["lo"] == same["hi"] == 0.0
