"""Every sweep file composes into valid runs; the W&B grid lists the same runs as sweeps/paper_grid.sh; the Optuna
preset searches the W&B bayes sweep's space, stores its study and continues it when relaunched."""

import itertools
import json
import os
import random
import shlex
import subprocess

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from paraisite.errors import ConfigError
from paraisite.recipe import check_config, check_run_keys
from paraisite.task import OptunaStudy
from tests.conftest import ROOT
from tests.test_train import train_cli

SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.fixture(autouse=True)
def hydra_conf():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        yield


def compose_run(overrides: list[str]):
    """Compose and check a grid point: config keys and values (typed), the head's constructor."""
    cfg = compose("train", overrides=overrides)
    check_config(cfg)
    instantiate(cfg.head, in_dim=16)
    return cfg


def sample(spec: dict, rng: random.Random):
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(spec["values"])
    if spec["distribution"] in ("log_uniform_values", "uniform"):
        return rng.uniform(spec["min"], spec["max"])
    raise AssertionError(f"unsupported distribution {spec}")


def points(sweep: dict, n_random: int = 12) -> list[list[str]]:
    params = sweep["parameters"]
    if sweep["method"] == "grid":
        names = list(params)
        values = [p["values"] if "values" in p else [p["value"]] for p in params.values()]
        return [[f"{k}={v}" for k, v in zip(names, combo)] for combo in itertools.product(*values)]
    rng = random.Random(0)
    return [[f"{k}={sample(p, rng)}" for k, p in params.items()] for _ in range(n_random)]


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.name == "paper_grid.yaml" else p
                                  for p in SWEEPS], ids=[p.name for p in SWEEPS])  # the full grid composes slowly
def test_sweep_file_composes(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "train.py" and "${args_no_hyphens}" in sweep["command"]
    assert sweep["metric"]["goal"] == "minimize" and "test" not in sweep["metric"]["name"]  # never select on test
    for overrides in points(sweep):
        compose_run(overrides)


RUNTIME = ("hydra.", "progress_bar=", "logger=", "protocol=")  # not part of a grid point's identity


def grid_point(overrides) -> frozenset[str]:
    return frozenset(o for o in overrides if not o.startswith(RUNTIME))


def grid_script_runs() -> set[frozenset[str]]:
    """Runs that sweeps/paper_grid.sh launches, read from its commands with PY=echo."""
    env = dict(os.environ, PY="echo", OUT="/nonexistent")
    out = subprocess.run(["bash", str(ROOT / "sweeps" / "paper_grid.sh")], env=env, capture_output=True,
                         text=True, check=True).stdout
    runs = set()
    for line in out.splitlines():
        args = shlex.split(line)
        if args[0] != "train.py":
            continue
        overrides = [a for a in args[1:] if a != "-m"]
        names = [o.split("=", 1)[0] for o in overrides]
        choices = [o.split("=", 1)[1].split(",") for o in overrides]
        runs |= {grid_point(f"{k}={v}" for k, v in zip(names, combo)) for combo in itertools.product(*choices)}
    return runs


def test_wandb_grid_lists_the_same_runs_as_the_grid_script():
    wandb = {grid_point(p) for name in ("paper_grid.yaml", "paper_grid_agl.yaml")
             for p in points(yaml.safe_load((ROOT / "sweeps" / name).read_text()))}
    script = grid_script_runs()
    assert len(script) == 3 * 3 * 9 + 2 * 9
    assert wandb == script


OPTUNA = ROOT / "conf" / "hparams_search" / "step3_optuna.yaml"


def optuna_space() -> dict:
    """{key: Optuna distribution} of the preset's `hydra.sweeper.params`, parsed as the sweeper parses them."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    params = yaml.safe_load(OPTUNA.read_text())["hydra"]["sweeper"]["params"]
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert not fixed
    return space


def test_the_wandb_bayes_sweep_searches_the_optuna_space():
    from optuna.distributions import CategoricalDistribution, LogUniformDistribution

    searched = {k: p for k, p in yaml.safe_load((ROOT / "sweeps" / "step3_bayes.yaml").read_text())["parameters"].items()
                if "value" not in p}
    space = optuna_space()
    assert set(searched) == set(space)
    for key, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            assert list(distribution.choices) == searched[key]["values"], key
        else:
            assert isinstance(distribution, LogUniformDistribution), key
            assert searched[key] == {"distribution": "log_uniform_values", "min": distribution.low,
                                     "max": distribution.high}, key


def test_an_optuna_search_makes_its_storage_folder_and_refuses_the_paper_protocol(tmp_path):
    storage = f"sqlite:///{tmp_path}/studies/optuna.db"
    cfg = compose("train", overrides=["hparams_search=step3_optuna", f"hydra.sweeper.storage={storage}"],
                  return_hydra_config=True)
    OptunaStudy().on_multirun_start(config=cfg)
    assert (tmp_path / "studies").is_dir()
    paper = compose("train", overrides=["hparams_search=step3_optuna", "protocol=paper"], return_hydra_config=True)
    with pytest.raises(ConfigError, match="protocol=paper selects on the test split"):
        OptunaStudy().on_multirun_start(config=paper)


@pytest.mark.slow
def test_an_optuna_search_stores_its_trials_and_a_relaunch_continues_the_study(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path}/db/optuna.db"
    for launch in (1, 2):
        sweep = tmp_path / f"launch{launch}"
        done = train_cli("-m", "hparams_search=step3_optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
                         f"hydra.sweeper.storage={storage}", "threads=1")
        assert done.returncode == 0, done.stderr[-2000:]
        trials = optuna.load_study(study_name="step3-megnet-eform-dataset1-holdout-smoke", storage=storage).trials
        assert len(trials) == 3 * launch and {t.state.name for t in trials} == {"COMPLETE"}
        for trial, run in zip(trials[-3:], sorted(sweep.glob("*/results.json"))):  # job n = this launch's trial n
            assert trial.value == pytest.approx(json.loads(run.read_text())["stages"][-1]["best_val_mape"])
            config = OmegaConf.load(run.parent / ".hydra" / "config.yaml")
            assert config.finetune.stages.dft.lr == pytest.approx(trial.params["++finetune.stages.dft.lr"])
            assert config.head.widths == json.loads(trial.params["head.widths"])


def test_the_one_stage_preset_scores_a_trial_by_cross_validation():
    cfg = compose("train", overrides=["hparams_search=dft_optuna", "backbone=m3gnet", "data=dataset2"])
    assert (cfg.objective, cfg.protocol, cfg.fold, cfg.finetune.name) == ("cv", "cv", None, "dft")
    params = yaml.safe_load((ROOT / "conf" / "hparams_search" / "dft_optuna.yaml").read_text())["hydra"]["sweeper"]["params"]
    assert {k.split(".")[2] for k in params if k.startswith("++finetune.stages.")} == {"dft"}  # the chain's one stage
    check_run_keys(cfg)
    for overrides, message in ((["fold=1"], "objective=cv runs every fold of protocol=cv itself"),
                               (["protocol=holdout"], "set protocol=cv and leave fold unset"),
                               (["objective=folds"], "objective")):
        with pytest.raises(ConfigError, match=message):
            check_run_keys(compose("train", overrides=["hparams_search=dft_optuna", *overrides]))


@pytest.mark.slow
def test_objective_cv_trains_every_fold_and_returns_their_mean_validation_score(tmp_path):
    from paraisite.report import find_runs, summarize

    run = tmp_path / "trial"
    done = train_cli("objective=cv", "protocol=cv", "finetune=dft", "datamodule.folds=2", "threads=1",
                     f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    scores = [json.loads((run / f"fold{f}" / "results.json").read_text())["stages"][-1]["best_val_mape"] for f in (0, 1)]
    assert f"mean validation score over 2 folds {sum(scores) / 2:.4f}" in done.stdout + done.stderr
    runs = find_runs([tmp_path])  # the trial folder is no run itself; its folds are one cv repeat
    assert sorted(r["config"]["fold"] for r in runs) == [0, 1] and {r["status"] for r in runs} == {"ok"}
    (row,) = summarize(runs)
    assert (row["folds"], row["incomplete"], row["dataset1_n"]) == (2, "", 1)
    assert row["val_mean"] == pytest.approx(sum(scores) / 2)


def test_gpu_bench_runs_compose_and_rate_is_records_per_second():
    """bench/gpu.py's runs are valid grid points (a typo would waste a lent GPU session), and its rate is the stage's
    training records × epochs over its wall time."""
    from bench import gpu

    for backbone, batch, device in itertools.product(("megnet", "m3gnet"), (8, 128), ("cuda", "cpu")):
        cfg = compose_run(gpu.throughput_overrides(backbone, batch, device))
        assert cfg.stage_overrides.batch_size == batch and cfg.trainer.accelerator == ("gpu" if device == "cuda"
                                                                                      else "cpu")
    stage = {"n_train": 544, "epochs_run": 3, "wall_time_s": 6.0}
    assert gpu.stage_rate({"stages": [stage]}) == pytest.approx(272.0)
    assert gpu.stage_rate({"status": "no results.json"}) is None
