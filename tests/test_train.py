"""Training end to end: the smoke preset in-process, the Hydra CLI (single run, multirun, bad input)."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from paraisite import chain
from paraisite.errors import ParaisiteError
from tests.conftest import ROOT, write_records
from tests.helpers import compose_cfg

LTC_SETS = ("dataset1", "dataset2", "mix", "agl")


def train_cli(*args, cwd=ROOT):
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *flags, "experiment=smoke", *overrides], cwd=cwd,
                          capture_output=True, text=True, env=dict(os.environ, HYDRA_FULL_ERROR="0"), timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The default chain (eform → AGL → dataset1) in smoke size; records the weights each stage starts from."""
    run_dir = tmp_path_factory.mktemp("run")
    starts, original = [], chain.train_stage

    def recording(module, stage, *args):
        starts.append({k: v.clone() for k, v in module.state_dict().items() if not k.startswith("transform.")})
        return original(module, stage, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chain, "train_stage", recording)
        results = chain.run(compose_cfg(), run_dir)
    return run_dir, results, starts


@pytest.mark.slow
def test_results_json_schema(smoke_run):
    run_dir, results, _ = smoke_run
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["status"] == "ok"
    assert on_disk["config"] == {"backbone": "megnet", "pretrain": "eform", "finetune": "agl_dft",
                                 "data": "dataset1", "seed": 1, "protocol": "holdout", "fold": None}
    assert set(on_disk["test"]) == set(LTC_SETS)
    for name in LTC_SETS:
        metrics = on_disk["test"][name]
        assert metrics["n"] > 0 and metrics["mape"] >= 0 and metrics["mae"] >= 0
        assert {"log_mae", "log_rmse", "r2", "spearman", "dropped"} <= set(metrics)
    assert on_disk["test"]["mix"]["n"] == on_disk["test"]["dataset1"]["n"] + on_disk["test"]["dataset2"]["n"]
    assert [(s["name"], s["data"], s["epochs"]) for s in on_disk["stages"]] == [("agl", "agl", 2), ("dft", "dataset1", 2)]
    for stage in ("agl", "dft"):
        assert (run_dir / "logs" / stage / "metrics.csv").is_file()


@pytest.mark.slow
def test_second_stage_starts_from_first_stage_best_weights(smoke_run):
    run_dir, _, (first_start, second_start) = smoke_run
    best_agl = torch.load(run_dir / "checkpoints" / "agl" / "best.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(second_start[k], best_agl[k]) for k in second_start)
    pretrained = "backbone.model.embedding.layer_node_embedding.weight"
    assert not torch.equal(second_start[pretrained], first_start[pretrained])


@pytest.mark.slow
def test_checkpoints_load_without_unpickling_code(smoke_run):
    run_dir, _, _ = smoke_run
    best = torch.load(run_dir / "checkpoints" / "dft" / "best.ckpt", weights_only=True)
    final = torch.load(run_dir / "model.pt", weights_only=True)
    assert final["format"] == 2 and final["config"]["backbone"]["name"] == "megnet"
    assert best["state_dict"].keys() == final["state_dict"].keys()


@pytest.mark.slow
def test_cli_multirun_over_pretrain(tmp_path):
    done = train_cli("-m", "pretrain=gap,scratch", "finetune=dft", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/results.json"))]
    assert sorted(r["config"]["pretrain"] for r in results) == ["gap", "scratch"]
    assert all(r["status"] == "ok" for r in results)
    assert "MAPE" in done.stdout  # the final table


@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path, mirror_records):
    data = write_records(tmp_path / "neg.json", [dict(mirror_records[0], kappa=-2.0)] + mirror_records[1:30])
    done = train_cli("data=file", f"data.dataset={data}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert re.search(r"neg\.json: 1 bad record\(s\): mp-\d+: target is -2", lines[0]), lines[0]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("make_args,expected", [
    (lambda tmp, rows: ["data_dir=" + str(tmp / "nowhere")], r"data folder \S+nowhere does not exist"),
    (lambda tmp, rows: ["data=file", "data.dataset=" + str(write_records(tmp / "none.json", []))],
     r"none\.json: no usable records \(empty dataset\)"),
])
def test_bad_input_is_one_clear_error(tmp_path, mirror_records, make_args, expected):
    with pytest.raises(ParaisiteError) as err:
        chain.run(compose_cfg(*make_args(tmp_path, mirror_records)), tmp_path / "run")
    assert re.search(expected, str(err.value)) and "\n" not in str(err.value)


@pytest.mark.slow
def test_relaunch_into_another_runs_folder_is_refused_without_damage(smoke_run):
    from paraisite.report import settings_of

    run_dir, _, _ = smoke_run
    before = {name: (run_dir / name).read_bytes() for name in ("results.json", "run_key.json")}
    settings = settings_of({"dir": str(run_dir)})
    done = train_cli("seed=7", "stage_overrides.lr=0.5", f"hydra.run.dir={run_dir}")
    assert done.returncode == 2 and "holds files of a run with another config" in done.stderr
    assert "stage_overrides.lr: None → 0.5" in done.stderr  # the message names what changed
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert "lr: 0.5" in (run_dir / ".hydra" / "config.yaml").read_text()  # Hydra rewrote it before the refusal ...
    assert settings_of({"dir": str(run_dir)}) == settings  # ... the report reads the run's own record
    assert settings["stage_overrides.lr"] is None and json.loads(before["run_key.json"])["config"]["seed"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("ema_epochs", [0, 2])
def test_a_run_killed_mid_stage_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, ema_epochs):
    """A crash right after the checkpoint of epoch 3 (what SIGKILL leaves: atomic files, no results.json); the same
    command into the same folder continues at epoch 4 and finishes, and then drops the resume checkpoint. With
    weight averaging the checkpoint holds the average and the raw weights, and both resume."""
    from paraisite import fit

    cfg = compose_cfg("finetune=dft", "stage_overrides.epochs=8", "resume_every_s=0", "stage_cache=false",
                      f"stage_overrides.ema_epochs={ema_epochs}")
    save = fit.LatestCheckpoint.on_validation_end

    def crash_after_epoch_3(self, trainer, module):
        save(self, trainer, module)
        if trainer.current_epoch == 3:
            raise RuntimeError("killed")

    monkeypatch.setattr(fit.LatestCheckpoint, "on_validation_end", crash_after_epoch_3)
    with pytest.raises(RuntimeError, match="killed"):
        chain.run(cfg, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "dft" / "latest.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 3 and not (tmp_path / "run" / "results.json").exists()
    monkeypatch.setattr(fit.LatestCheckpoint, "on_validation_end", save)
    results = chain.run(cfg, tmp_path / "run")
    (stage,) = results["stages"]
    assert stage["resumed_from_epoch"] == 4 and stage["epochs"] == 8
    assert (tmp_path / "run" / "stages" / "dft.json").is_file() and not last.exists()  # done: resume state removed


@pytest.mark.slow
def test_paper_protocol_run(tmp_path):
    results = chain.run(compose_cfg("finetune=dft", "protocol=paper"), tmp_path)
    (stage,) = results["stages"]
    assert results["config"]["protocol"] == "paper" and stage["n_val"] == results["test"]["dataset1"]["n"]


def test_weight_averaging_follows_the_exponential_moving_average_of_the_steps(tmp_path):
    """EpochEMA with a time constant of 1 epoch of 4 steps: decay 0.75 per step, started from the first step's
    weights; the module ends with the average."""
    import lightning as L

    from paraisite.fit import EpochEMA

    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    class Toy(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.linear, self.seen = torch.nn.Linear(3, 1), []

        def training_step(self, batch, _):
            return torch.nn.functional.mse_loss(self.linear(batch[0]), batch[1])

        def on_train_batch_end(self, *_):
            self.seen.append(self.linear.weight.detach().clone())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    toy = Toy()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    L.Trainer(max_epochs=2, callbacks=[EpochEMA(1.0)], logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path).fit(toy, loader)
    expected = toy.seen[0]
    for weights in toy.seen[1:]:
        expected = 0.75 * expected + 0.25 * weights
    assert len(toy.seen) == 8 and torch.allclose(toy.linear.weight, expected, atol=1e-6)
    assert not torch.allclose(toy.linear.weight, toy.seen[-1])


@pytest.mark.slow
def test_a_stage_with_weight_averaging_keeps_and_ends_with_the_averaged_weights(tmp_path):
    results = chain.run(compose_cfg("finetune=dft", "stage_overrides.epochs=4", "stage_overrides.ema_epochs=2",
                                    "stage_cache=false"), tmp_path)
    best = torch.load(tmp_path / "checkpoints" / "dft" / "best.ckpt", weights_only=True)
    final = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    head = [k for k in best["state_dict"] if k.startswith("head.") and k.endswith("weight")]
    assert head and all(torch.equal(final[k], best["state_dict"][k]) for k in head)  # the average, kept ...
    assert not all(torch.equal(best["current_model_state"][k], best["state_dict"][k]) for k in head)  # ... not the raw
    assert results["status"] == "ok"


def test_an_added_stage_key_at_its_neutral_value_leaves_a_runs_identity_unchanged():
    from omegaconf import OmegaConf

    from paraisite.recipe import run_identity

    now = OmegaConf.to_container(compose_cfg(), resolve=True)
    before = json.loads(json.dumps(now))  # a config recorded before `ema_epochs` existed
    del before["stage_defaults"]["ema_epochs"], before["stage_overrides"]["ema_epochs"]
    assert run_identity(now) == run_identity(before)
    now["stage_overrides"]["ema_epochs"] = 3
    assert run_identity(now) != run_identity(before)
    assert chain.config_change({"config": before}, run_identity(now)) == " (stage_overrides.ema_epochs: (unset) → 3)"
    del before["data"]["centre"]  # likewise a data key: runs recorded before `data.centre` are the same runs
    now["stage_overrides"]["ema_epochs"] = 0
    assert run_identity(now) == run_identity(before)
    now["data"]["centre"] = "loss"
    assert run_identity(now) != run_identity(before)


def test_the_best_checkpoint_is_chosen_after_the_burn_in(tmp_path):
    """With `select_from_epoch` = 2 the best validation epoch is chosen among epochs 2.. even though epoch 0 scored
    lower; without it, epoch 0 is kept."""
    import lightning as L

    from paraisite.fit import BestCheckpoint

    scores = [0.1, 0.5, 0.4, 0.3, 0.35]

    class Toy(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(1, 1)

        def training_step(self, batch, _):
            return self.linear(batch[0]).pow(2).mean()

        def validation_step(self, batch, _):
            self.log("val/mape", scores[self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=4)
    for from_epoch, expected in [(0, 0), (2, 3)]:
        best = BestCheckpoint(from_epoch, dirpath=tmp_path / str(from_epoch), filename="best", monitor="val/mape",
                              mode="min")
        L.Trainer(max_epochs=len(scores), callbacks=[best], logger=False, num_sanity_val_steps=0,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path).fit(
            Toy(), loader, loader)
        assert torch.load(best.best_model_path, weights_only=True)["epoch"] == expected
        assert best.best_model_score.item() == pytest.approx(scores[expected])


@pytest.mark.slow
def test_a_refit_retrains_the_last_stage_on_training_and_validation_records_for_the_chosen_epochs(tmp_path):
    """refit=true: the stored stage (shared with the run without refit) chooses the epoch; the refit trains from the
    same start on train + val for that many epochs, and its last weights are the model."""
    plain = chain.run(compose_cfg("finetune=dft", "stage_overrides.epochs=4"), tmp_path / "plain")
    results = chain.run(compose_cfg("finetune=dft", "stage_overrides.epochs=4", "stage_overrides.refit=true"),
                        tmp_path / "refit")
    (stage,) = results["stages"]
    refit = stage["refit"]
    assert stage["reused_from"] and stage["best_epoch"] == plain["stages"][0]["best_epoch"]
    assert refit["name"] == "dft_refit" and refit["epochs"] == refit["epochs_run"] == stage["best_epoch"] + 1
    assert refit["best_epoch"] == stage["best_epoch"] and refit["n_train"] == stage["n_train"] + stage["n_val"]
    final = torch.load(tmp_path / "refit" / "model.pt", weights_only=True)["state_dict"]
    chosen, refitted = (torch.load(tmp_path / "refit" / "checkpoints" / name / "best.ckpt", weights_only=True)
                        ["state_dict"] for name in ("dft", "dft_refit"))
    head = [k for k in final if k.startswith("head.")]
    assert all(torch.equal(final[k], refitted[k]) for k in head)
    assert not all(torch.equal(final[k], chosen[k]) for k in head)
    assert results["test"]["dataset1"]["mape"] != plain["test"]["dataset1"]["mape"]
    assert chain.run(compose_cfg("finetune=dft", "stage_overrides.epochs=4", "stage_overrides.refit=true"),
                     tmp_path / "refit")["test"] == results["test"]  # a rerun finds both stages done
