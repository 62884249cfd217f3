"""Helpers shared by the benchmarks: machine facts, a model folder, the results section of docs/benchmarks.md."""

from __future__ import annotations

import gzip
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}, Python {platform.python_version()}")


def screening_records(n: int) -> list[dict]:
    """n records from the mirror's screening set (repeated, with new ids, past its 2228)."""
    from paraisite.data.mirror import mirror_file

    with gzip.open(mirror_file("screening/mp_scan.json.gz"), "rt") as f:
        rows = json.load(f)
    return [dict(rows[i % len(rows)], id=f"{rows[i % len(rows)]['id']}#{i // len(rows)}") for i in range(n)]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    with gzip.open(path, "wt") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def model_folder(folder: Path, overrides: list[str] = ()) -> Path:
    """A run folder holding model.pt for an (untrained) eform → dft model: speed does not depend on training."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from paraisite.files import write_atomic
    from paraisite.models.io import model_file_bytes
    from paraisite.recipe import build_model, pretrained_weights

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["finetune=dft", *overrides])
    write_atomic(folder / "model.pt", model_file_bytes(build_model(cfg, pretrained_weights(cfg)), OmegaConf.to_container(cfg, resolve=True)))
    return folder


def stock_megnet():
    """matgl's own MEGNet with the published Eform weights, untouched by our backbone (the peer's model)."""
    from matgl.models import MEGNet

    from paraisite.models.megnet import EFORM, load_state, read_model_json

    model = MEGNet(**read_model_json(EFORM)[0])
    model.load_state_dict(load_state(EFORM))
    return model.eval()


def stock_m3gnet():
    """matgl 4's own M3GNet (its PyG convolution, untouched) with the published Eform weights: the peer's model for
    speed (its numbers differ from ours, see paraisite.models.m3gnet; the operations and their cost do not)."""
    from matgl.models import M3GNet

    from paraisite.models.m3gnet import EFORM, load_exactly
    from paraisite.models.megnet import read_model_json

    model = M3GNet(**read_model_json(EFORM)[0])
    load_exactly(model, EFORM, None)
    return model.eval()


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory (MB) of a command run in its own process tree."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([os.sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def write_section(name: str, body: str) -> None:
    """Replace the section between `<!-- bench:name -->` markers in docs/benchmarks.md (append if absent)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
