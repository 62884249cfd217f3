import gzip
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several test processes (`-n`): one thread each, as many as cores
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # and the processes the tests start
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Every test session gets its own cache folder (graphs, checksum stamps)."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["PARAISITE_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def mirror_records():
    from paraisite.data.mirror import mirror_file

    with gzip.open(mirror_file("ltc/dataset1.json.gz"), "rt") as f:
        return json.load(f)


def write_records(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory):
    """Two finished smoke runs (seeds 1 and 2, eform → dft on dataset2) in one sweep folder."""
    from hydra import compose, initialize_config_dir

    from paraisite.chain import run

    sweep = tmp_path_factory.mktemp("sweep")
    for seed in (1, 2):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["experiment=smoke", "finetune=dft", "data=dataset2", f"seed={seed}"])
        run(cfg, sweep / f"s{seed}")
    return sweep
