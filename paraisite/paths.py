"""Where things are: the data folder and the cache folder (resolved here alone), the run folders below a sweep."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Data folder: `override`, else $PARAISITE_DATA_DIR, else the project's `data/` folder."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("PARAISITE_DATA_DIR")
    return Path(env).expanduser() if env else PROJECT_ROOT / "data"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Cache folder (graphs, checksum stamps): `override`, else $PARAISITE_CACHE_DIR, else ~/.cache/paraisite."""
    if override:
        path = Path(override).expanduser()
    else:
        env = os.environ.get("PARAISITE_CACHE_DIR")
        path = Path(env).expanduser() if env else Path.home() / ".cache" / "paraisite"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_folders(root: Path) -> set[Path]:
    """The run folders below `root`: those with a results.json or a `.hydra/config.yaml`, but not the folder of an
    objective=cv job (its runs are its fold<i>/ subfolders)."""
    with_results = {p.parent for p in root.rglob("results.json")}
    configured = {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    return with_results | {f for f in configured - with_results if not holds_folds(f)}


def holds_folds(folder: Path) -> bool:
    """A job of objective=cv: no run itself, its fold runs are in fold<i>/ below it."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(folder / ".hydra" / "config.yaml").get("objective") == "cv"
    except Exception:  # an unreadable config: a run that crashed early, listed as such
        return False
