"""Chains: stage composition, the AGL leakage filter, the report."""

import json
import shutil
from functools import partial

import pytest
from matgl.config import DEFAULT_ELEMENTS

from paraisite.chain import other_test_formulas
from paraisite.data.datamodule import LTCDataModule
from paraisite.data.graphs import GraphFeaturizer
from paraisite.errors import ParaisiteError
from paraisite.recipe import run_label, stages_of
from paraisite.report import find_runs, markdown, summarize, write_report
from tests.conftest import write_records
from tests.helpers import cfg_of

FEATURIZER = GraphFeaturizer(4.0, DEFAULT_ELEMENTS)


def test_stage_settings_compose_in_order():
    stages = stages_of(cfg_of("finetune=agl_dft", "data=dataset2", "stage_overrides.lr=0.01"))
    assert [(s.name, s.data) for s in stages] == [("agl", "agl"), ("dft", "dataset2")]
    assert (stages[0].epochs, stages[0].batch_size) == (60, 32)  # stage_by_data.agl (CPU budget)
    assert (stages[1].epochs, stages[1].batch_size) == (300, 8)  # published recipe
    assert all(s.lr == 0.01 for s in stages)
    published = stages_of(cfg_of("experiment=paper_step3"))
    assert (published[0].epochs, published[0].batch_size) == (300, 8)


@pytest.mark.parametrize("overrides,label", [
    (["experiment=paper_step1", "data=mix"], ("scratch", "dft", "mix")),
    (["experiment=paper_step2", "finetune=agl", "data=dataset1"], ("eform", "agl", "agl")),
    (["experiment=paper_step3", "data=dataset2"], ("eform", "agl_dft", "dataset2")),
])
def test_presets_and_labels(overrides, label):
    config = run_label(cfg_of(*overrides))
    assert (config["pretrain"], config["finetune"], config["data"]) == label


@pytest.mark.slow  # several seconds: left out of the edit loop (make test-fast)
def test_agl_leakage_filter_on_a_constructed_overlap(tmp_path, mirror_records):
    """A stage's training data never holds a formula that another source tests on (holdout)."""
    datamodule = partial(LTCDataModule, featurizer=FEATURIZER, seed=5)
    d1 = datamodule(dataset="dataset1")
    d1.setup()
    test_ids = {d1.data.ids[i] for i in d1.splits["test"]}
    # an AGL-like file holding copies of every Dataset1 material under new ids: the test ones must go
    copies = write_records(tmp_path / "aux.json", [dict(r, id=f"copy-{r['id']}") for r in mirror_records])
    exclude = other_test_formulas(str(copies), datamodule)
    assert d1.formulas("test") <= exclude
    aux = datamodule(dataset=str(copies), exclude_formulas=exclude)
    aux.setup()
    trained = {aux.data.formulas[i] for split in ("train", "val") for i in aux.splits[split]}
    assert not trained & d1.formulas("test")
    n_in_test_formulas = sum(r["formula"] in d1.formulas("test") for r in mirror_records)
    assert aux.n_excluded > 0 and aux.n_excluded <= n_in_test_formulas
    assert len(test_ids) == len(d1.splits["test"])


def fake_run(folder, pretrain, seed, mape, status="ok", overrides=()):
    """A run folder as Hydra leaves it (the composed config), with a results.json unless the run crashed."""
    from omegaconf import OmegaConf

    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg_of(f"pretrain={pretrain}", "finetune=dft", f"seed={seed}", *overrides),
                   folder / ".hydra" / "config.yaml")
    if status == "crashed":
        return
    config = {"backbone": "megnet", "pretrain": pretrain, "finetune": "dft", "data": "dataset1", "seed": seed,
              "protocol": "holdout"}
    test = {t: {"mape": mape, "mae": 1.0, "n": 5} for t in ("dataset1", "dataset2", "mix", "agl")}
    (folder / "results.json").write_text(json.dumps({"status": status, "config": config, "test": test,
                                                     "stages": [{"name": "dft"}]}))
    (folder / "logs" / "dft").mkdir(parents=True)
    (folder / "logs" / "dft" / "metrics.csv").write_text("epoch,step,val/mape\n0,1,0.9\n1,2,0.5\n")


def test_report_mean_std_and_failed_runs_marked(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, mape in ((1, 0.2), (2, 0.4), (3, 0.6)):
        fake_run(sweep / f"e{seed}", "eform", seed, mape)
    fake_run(sweep / "s1", "scratch", 1, 0.9)
    fake_run(sweep / "s2", "scratch", 2, 0.0, status="crashed")
    rows = {r["pretrain"]: r for r in summarize(find_runs([sweep]))}
    assert rows["eform"]["dataset1_mean"] == pytest.approx(0.4)
    assert rows["eform"]["dataset1_std"] == pytest.approx(0.2)
    assert rows["eform"]["seeds"] == [1, 2, 3] and rows["eform"]["n_failed"] == 0
    assert rows["scratch"]["n_failed"] == 1 and rows["scratch"]["dataset1_n"] == 1
    table = markdown(list(rows.values()), "mape")
    assert "0.40 (0.20)" in table and "**1 failed**" in table
    out = tmp_path / "report"
    write_report([sweep], out)
    for name in ("table.csv", "table.md", "heatmap.png", "curves.png", "failed.txt"):
        assert (out / name).stat().st_size > 0
    assert "s2" in (out / "failed.txt").read_text()
    shutil.rmtree(sweep / "s2")
    fake_run(sweep / "s2", "scratch", 2, 0.5)  # rerun: it finished
    write_report([sweep], out)
    assert not (out / "failed.txt").exists()  # the earlier report's list is not left behind


def test_report_cli_on_a_smoke_sweep(two_runs, tmp_path, capsys):
    from paraisite.cli import main as cli

    assert cli(["report", str(two_runs), "--output", str(tmp_path / "r")]) == 0
    for name in ("table.csv", "table.md", "heatmap.png", "curves.png"):
        assert (tmp_path / "r" / name).is_file()
    assert "| megnet | eform | dft | dataset2 | holdout |" in capsys.readouterr().out


def test_a_crashed_agl_run_is_labelled_like_a_finished_one(tmp_path):
    from omegaconf import OmegaConf

    folder = tmp_path / "crashed" / ".hydra"
    folder.mkdir(parents=True)
    OmegaConf.save(cfg_of("finetune=agl", "data=dataset1", "seed=4"), folder / "config.yaml")
    (run,) = find_runs([tmp_path])
    assert run["status"] == "missing" and run["config"]["data"] == "agl" and run["config"]["seed"] == 4


def test_a_run_in_progress_is_reported_running_not_failed(tmp_path):
    from omegaconf import OmegaConf

    from paraisite.runlock import RunLock, is_running

    run_dir = tmp_path / "sweep" / "0-run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg_of("finetune=dft", "data=dataset1", "seed=1"), run_dir / ".hydra" / "config.yaml")
    with RunLock(run_dir):  # held as a live run holds it
        assert is_running(run_dir)
        (run,) = find_runs([tmp_path])
        assert run["status"] == "running"
        (row,) = summarize([run])
        assert row["n_failed"] == 0 and row["n_running"] == 1
        assert "| 0 (1 running) |" in markdown([row], "mape")
    assert not is_running(run_dir)  # released: a folder without results.json is a crash again
    assert find_runs([tmp_path])[0]["status"] == "missing"


def test_a_run_starting_while_a_report_probes_its_lock_is_not_refused(tmp_path):
    import fcntl
    import threading

    from paraisite.runlock import LOCK_FILE, RunLock

    (tmp_path / LOCK_FILE).touch()
    probe = open(tmp_path / LOCK_FILE)
    fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)  # what is_running holds for an instant
    threading.Timer(0.05, probe.close).start()
    with RunLock(tmp_path):  # waits the probe out instead of calling the folder busy
        pass


def test_report_rows_never_pool_other_settings(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, mape in ((1, 0.2), (2, 0.4)):
        fake_run(sweep / f"base{seed}", "eform", seed, mape, overrides=["threads=2", "progress_bar=false"])
        fake_run(sweep / f"lr{seed}", "eform", seed, mape + 1, overrides=["stage_overrides.lr=0.01"])
    fake_run(sweep / "split1", "eform", 1, 5.0, overrides=["datamodule.test_fraction=0.3"])
    rows = summarize(find_runs([sweep]))
    by_variant = {r["variant"]: r for r in rows}
    assert len(rows) == 3 and all(r["pretrain"] == "eform" for r in rows)  # one grid label, three configurations
    base = by_variant["datamodule.test_fraction=0.2, stage_overrides.lr=null"]  # runtime keys (threads) don't split
    assert base["seeds"] == [1, 2] and base["dataset1_mean"] == pytest.approx(0.3)
    lr = by_variant["datamodule.test_fraction=0.2, stage_overrides.lr=0.01"]
    assert lr["seeds"] == [1, 2] and lr["dataset1_mean"] == pytest.approx(1.3)
    assert by_variant["datamodule.test_fraction=0.3, stage_overrides.lr=null"]["seeds"] == [1]
    write_report([sweep], tmp_path / "report")
    assert "| variant |" in (tmp_path / "report" / "table.md").read_text()
    configs = (tmp_path / "report" / "row_configs.md").read_text()
    assert "| stage_overrides.lr | 0.01 | null | null |" in configs and "| runs | lr1, lr2 | base1, base2 | split1 |" in configs
    assert "datamodule.test_fraction" in configs and "threads" not in configs


def test_report_refuses_two_finished_runs_with_one_seed_in_a_row(tmp_path):
    fake_run(tmp_path / "a" / "run", "eform", 1, 0.2)
    fake_run(tmp_path / "b" / "run", "eform", 1, 0.3)
    with pytest.raises(ParaisiteError, match=r"a/run and .*b/run: two finished runs of the same configuration "
                                             r"with seed 1"):
        summarize(find_runs([tmp_path]))
    assert len(find_runs([tmp_path, tmp_path / "a"])) == 2  # a folder given twice is one run
