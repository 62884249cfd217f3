"""The one place that reads and writes this project's tensor files: checkpoints, model.pt, cached tensors.

Every read is `torch.load(weights_only=True)`: tensors and plain data only, never code. A file that holds anything
else is refused with the reason, not with torch's advice to load it unsafely.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from paraisite.errors import ParaisiteError
from paraisite.files import write_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # the backbone's source output layer is stored as buffers (source_weight/bias)
MODEL_FORMAT = 2  # model.pt: {"format", "config", "state_dict"}


def safe_load(path: str | Path, what: str = "file", mmap: bool = False):
    """The contents of a torch file, read without unpickling code; ParaisiteError naming the file otherwise."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise ParaisiteError(f"{path}: no such {what}") from None
    except Exception as exc:
        raise ParaisiteError(f"{path}: unreadable {what} ({load_error(exc)})") from None


def load_error(exc: BaseException) -> str:
    """Why `torch.load(..., weights_only=True)` failed, in one line (without torch's advice to load unsafely)."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)|Unsupported operand (\d+)|Unsupported class ([\w.]+)", text)
        what = "" if found is None else f": {found.group(1) or found.group(3) or f'pickle opcode {found.group(2)}'}"
        return f"it contains code or objects that safe loading refuses{what}; it was not run"
    first = text.strip().split("\n")[0]
    first = re.split(r"(?<=\.) (?=[A-Z])", first)[0]  # the first sentence: the reason, not the advice after it
    return f"{type(exc).__name__}: {first}"


def tensor_file_bytes(payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_cache(path: Path, payload: dict, cache_format: int) -> None:
    """Write a cache file atomically: a killed writer leaves at most a stray temp file, never half a cache."""
    write_atomic(path, tensor_file_bytes({**payload, "format": cache_format}))


def read_cache(path: Path, cache_format: int) -> dict | None:
    """A cache file's payload, or None when absent, of another format or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        payload = safe_load(path, "cache file", mmap=True)
    except ParaisiteError as exc:  # a truncated or foreign file: rebuild rather than fail
        log.warning("%s; rebuilding", exc)
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == cache_format else None


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint of this project; clear error on a foreign format."""
    checkpoint = safe_load(path, "checkpoint")
    check_checkpoint_format(checkpoint, path)
    return checkpoint


def check_checkpoint_format(checkpoint, source="checkpoint") -> None:
    found = checkpoint.get("paraisite_format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
    if found != CHECKPOINT_FORMAT:
        raise ParaisiteError(f"{source}: checkpoint format {found!r}, this paraisite reads format {CHECKPOINT_FORMAT}")


def model_file_bytes(module: nn.Module, config: dict) -> bytes:
    """Final weights plus the config that rebuilds the model (with the backbone's `spec`, so no data folder is
    needed to load it, and the calibration factor `output_scale`); tensors and plain data only."""
    config = {**config, "backbone": {**config["backbone"], "spec": module.backbone.spec},
              "head": module.head.stored_config() or config["head"], "output_scale": module.output_scale}
    return tensor_file_bytes({"format": MODEL_FORMAT, "config": config, "state_dict": module.state_dict()})


def read_model_file(path: str | Path) -> tuple[dict, dict]:
    """(config, state dict) of a model.pt."""
    payload = safe_load(path, "model file")
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found != MODEL_FORMAT:
        raise ParaisiteError(f"{path}: model format {found!r}, this paraisite reads format {MODEL_FORMAT}")
    return payload["config"], payload["state_dict"]
