"""The one place where the data folder and the cache folder are resolved."""

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
