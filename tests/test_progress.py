"""Watching long runs: plain progress lines in a log (not a terminal), `paraisite status` over a sweep, predict's
progress. One smoke run and one two-job smoke sweep (one job fails) serve every test."""

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymatgen.core import Structure

from paraisite.cli import main as cli
from paraisite.predict import count_inputs
from paraisite.progress import RateProgress
from paraisite.status import collect, expected_jobs, render
from tests.conftest import ROOT


def train_to_log(log: Path, *args):
    """train.py with stdout and stderr in a file, as under Slurm (`> log 2>&1`): stdout is not a terminal."""
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT, env=dict(os.environ, HYDRA_FULL_ERROR="0"), timeout=600)
    return done.returncode, log.read_text()


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """`python train.py experiment=smoke > log 2>&1`: the default chain (agl, then dft), 2 epochs each."""
    tmp = tmp_path_factory.mktemp("logged")
    rc, text = train_to_log(tmp / "run.log", "experiment=smoke", "stage_cache=false", f"hydra.run.dir={tmp / 'run'}")
    assert rc == 0, text[-3000:]
    return tmp / "run", text


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A two-job smoke sweep: dataset1 (finishes) and a data file that does not exist (fails)."""
    tmp = tmp_path_factory.mktemp("sweep")
    missing = tmp / "missing.json.gz"
    rc, text = train_to_log(tmp / "sweep.log", "-m", "experiment=smoke", "finetune=dft",
                            f"data.dataset=dataset1,{missing}", f"hydra.sweep.dir={tmp / 'sweep'}")
    assert rc == 0, text[-3000:]
    return tmp / "sweep", text


def epoch_line(stage: str, index: str, epoch: int, total: int) -> str:
    return (rf"stage {stage} \({index}\): epoch {epoch}/{total} · train/loss \S+ · val/mape [\d.]+ "
            rf"\(best [\d.]+\) · \d+s")


@pytest.mark.slow
def test_log_holds_epoch_lines_for_every_stage(logged_run):
    run_dir, text = logged_run
    for stage, index in (("agl", "1/2"), ("dft", "2/2")):
        assert re.search(epoch_line(stage, index, 1, 2) + r" · ETA \d+s · stage expected to take \d+s", text), text
        assert re.search(epoch_line(stage, index, 2, 2) + " · done", text), text
        assert re.search(rf"stage {stage} \({index}\) starts: \d+ train / \d+ val records after filtering, batch 16",
                         text)
    assert re.search(r"run plan: megnet · eform · agl_dft · dataset1 · seed 1 · holdout; 2 stage\(s\): "
                     r"1\. agl on agl \(2 epochs, batch 16, .*2\. dft on dataset1 \(2 epochs, batch 16.*device cpu × 1",
                     text)
    assert "epoch 2/2" in (run_dir / "train.log").read_text()  # Hydra's log file in the run folder too


@pytest.mark.slow
def test_sweep_log_has_progress_and_status_shows_finished_and_failed(sweep, capsys):
    folder, text = sweep
    assert re.search(epoch_line("dft", "1/1", 2, 2), text)  # progress under Hydra multirun
    before = snapshot(folder)
    assert cli(["status", str(folder)]) == 0
    out = capsys.readouterr().out
    assert snapshot(folder) == before  # read-only
    rows = {line.split()[0]: line for line in out.splitlines() if re.match(r"\d+-", line)}
    assert len(rows) == 2
    ok, failed = rows["0-megnet-eform-dft-dataset1-s1"], rows["1-megnet-eform-dft-dataset1-s1"]
    assert " finished " in ok and re.search(r"test mape [\d.]+", ok)
    assert " failed " in failed and "missing.json.gz: no such file" in failed
    assert "2 run(s): 1 finished, 1 failed" in out
    assert re.search(r"best so far on dataset1: mape [\d.]+ \(0-megnet-eform-dft-dataset1-s1", out)


@pytest.mark.slow
def test_jobs_without_a_folder_are_not_started(sweep, tmp_path):
    folder, _ = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.ckpt", "model.pt"))
    shutil.rmtree(next(copy.glob("1-*")))
    states = collect([copy])
    assert [s.state for s in states] == ["finished", "not started"]
    assert "1 of 2 job(s) have no run folder yet" in states[-1].note
    assert "2 run(s): 1 finished, 1 not started" in render(states)


def test_job_count_of_a_multirun_folder(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    params:\n      seed: 1,2,3\n  overrides:\n    task:\n    - experiment=smoke\n"
        "    - pretrain=eform,gap\n    - 'head.widths=[64,64]'\n    - stage_overrides.lr=range(1,3)\n")
    assert expected_jobs(tmp_path) == 3 * 2 * 2
    (tmp_path / "multirun.yaml").write_text("hydra: {sweeper: {_target_: hydra_plugins.optuna.OptunaSweeper}}\n")
    assert expected_jobs(tmp_path) is None  # unknown: no "not started" row


@pytest.mark.slow
@pytest.mark.parametrize("age_s,state", [(7200, "interrupted"), (0, "running")])
def test_run_killed_mid_stage_is_interrupted_at_its_last_epoch(logged_run, tmp_path, age_s, state):
    """A run folder as a killed job leaves it: first stage finished, the second one's log at epoch 1 of 2."""
    source, _ = logged_run
    run = tmp_path / "sweep" / "0-killed"
    shutil.copytree(source / ".hydra", run / ".hydra")
    (run / "stages").mkdir()
    shutil.copy(source / "stages" / "agl.json", run / "stages" / "agl.json")
    (run / "logs" / "dft").mkdir(parents=True)
    (run / "logs" / "dft" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/best_mape,val/mape\n0,1,,0.7,0.7\n0,1,0.9,,\n1,3,,0.6")  # last row cut short
    old = time.time() - age_s
    for file in run.rglob("*"):
        os.utime(file, (old, old))
    (state_,) = collect([tmp_path / "sweep"])
    assert (state_.state, state_.stage, state_.epoch, state_.metric) == (state, "dft (2/2)", "1/2", "best val mape 0.7")
    assert state_.note.startswith("last write ") and state_.note.endswith(" ago")
    assert not (run / "results.json").exists()


@pytest.mark.slow
def test_predict_prints_progress_unless_quiet(logged_run, tmp_path, capsys, mirror_records):
    run_dir, _ = logged_run
    folder = tmp_path / "inputs"
    folder.mkdir()
    for row in mirror_records[:3]:
        Structure.from_dict(row["structure"]).to(filename=str(folder / f"{row['id']}.cif"))
    args = ["predict", str(folder), "--run", str(run_dir), "--output", str(tmp_path / "p.csv")]
    assert cli([*args, "--progress-every", "0"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"predict: 3/3 structures \(100%\) · [\d.]+/s · \d+s · done", err), err
    assert cli([*args, "--quiet"]) == 0
    assert "predict:" not in capsys.readouterr().err


def test_input_counts_and_rate_lines(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": 1}\n{"id": 2}\n\n{"id": 3}\n')
    (tmp_path / "b.csv").write_text("formula\nNaCl\nKBr\n")
    assert count_inputs([tmp_path / "a.jsonl", tmp_path / "b.csv"]) == 5
    (tmp_path / "c.json").write_text('[{"id": 1}]')
    assert count_inputs([tmp_path]) is None  # a record list: only parsing would count it
    stream = io.StringIO()
    progress = RateProgress(total=None, every_s=3600, stream=stream)
    progress(10)
    progress(10)  # within every_s: no line
    progress.close()
    assert [line.split(" · ")[0] for line in stream.getvalue().splitlines()] == ["predict: 10 structures",
                                                                                 "predict: 20 structures"]


def snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}
