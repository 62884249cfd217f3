"""Scale-out: submitit's local executor (the Slurm code path), Lightning DDP on 2 CPU processes, multirun failures."""

import json

import pytest

from tests.conftest import write_records
from tests.test_train import train_cli


def results_in(folder):
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/results.json")}


@pytest.mark.slow
def test_submitit_local_two_job_sweep(tmp_path):
    done = train_cli("-m", "hydra/launcher=local", "finetune=dft", "seed=1,2", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = results_in(tmp_path)
    assert sorted(r["config"]["seed"] for r in results.values()) == [1, 2]
    assert all(r["status"] == "ok" and set(r["test"]) == {"dataset1", "dataset2", "mix", "agl"}
               for r in results.values())


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_equals_one_process(tmp_path):
    """Full-batch steps (train split 32, val 6): 2 ranks × 16 = 1 process × 32, so the runs must agree."""
    common = ["finetune=dft", "datamodule.limit=48"]
    ddp = train_cli(*common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                    "stage_overrides.batch_size=16", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = train_cli(*common, "stage_overrides.batch_size=32", f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("ddp", "single"))
    assert a["stages"][0]["devices"] == 2 and b["stages"][0]["devices"] == 1
    assert a["stages"][0]["n_train"] == 32
    assert a["stages"][0]["best_val_mape"] == pytest.approx(b["stages"][0]["best_val_mape"], rel=1e-4)
    for test in a["test"]:
        assert a["test"][test]["mape"] == pytest.approx(b["test"][test]["mape"], rel=1e-4)
    assert not list((tmp_path / "ddp").glob("results*.json"))[1:]  # rank 1 wrote no results of its own


@pytest.mark.slow
def test_multirun_with_a_failing_job_finishes_the_others(tmp_path, mirror_records):
    good = write_records(tmp_path / "good.json", mirror_records[:40])
    bad = write_records(tmp_path / "bad.json", [dict(mirror_records[0], kappa="n/a")] + mirror_records[1:40])
    done = train_cli("-m", "finetune=dft", "data=file", f"data.dataset={good},{bad}", f"hydra.sweep.dir={tmp_path / 's'}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = sorted(results_in(tmp_path / "s").values(), key=lambda r: r["status"])
    assert [r["status"] for r in results] == ["failed", "ok"]
    assert "bad.json: 1 bad record(s): mp-23231: target 'n/a' is not a number" in results[0]["error"]


@pytest.mark.slow
def test_a_crashing_job_in_a_sweep_is_recorded_and_the_sweep_goes_on(tmp_path):
    done = train_cli("-m", "finetune=dft", "head.activation=bogus,relu", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = sorted(results_in(tmp_path).values(), key=lambda r: r["status"])
    assert [r["status"] for r in results] == ["failed", "ok"]
    assert "KeyError" in results[0]["error"] and "bogus" in results[0]["error"]


def test_share_of_cores_for_jobs_side_by_side():
    from omegaconf import OmegaConf

    from paraisite.task import share_of_cores

    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                               "n_jobs": 2})
    basic = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    cpu = OmegaConf.create({"accelerator": "cpu", "devices": 1})
    assert share_of_cores(joblib, cpu, multirun=True, cores=2)[0] == 1
    assert share_of_cores(joblib, cpu, multirun=True, cores=16)[0] == 8
    assert share_of_cores(OmegaConf.merge(joblib, {"n_jobs": -1}), cpu, multirun=True, cores=4)[0] == 1
    assert share_of_cores(basic, cpu, multirun=True, cores=2) == (None, "")
    assert share_of_cores(basic, OmegaConf.create({"accelerator": "cpu", "devices": 2}), False, cores=2)[0] == 1
    submitit = OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                                 "cpus_per_task": 1})
    assert share_of_cores(submitit, cpu, multirun=True, cores=2)[0] == 1


@pytest.mark.slow
def test_joblib_jobs_get_one_thread_each_without_being_told(tmp_path):
    done = train_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "finetune=dft", "seed=1,2",
                     f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    logs = [p.read_text() for p in tmp_path.glob("*/train.log")]
    assert len(logs) == 2 and all("torch threads: 1 (joblib n_jobs=2" in t and "1 CPU thread(s)" in t for t in logs)
