"""Every sweep file composes into valid runs; the W&B grid lists the same runs as sweeps/paper_grid.sh."""

import itertools
import os
import random
import shlex
import subprocess

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from paraisite.recipe import check_config
from tests.conftest import ROOT

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


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
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
