"""Content-addressed store of finished stages, shared by every run on the machine (or cluster file system).

`$PARAISITE_CACHE_DIR/stages/<key>/` holds a stage's best weights (`best.ckpt`), its results entry (`stage.json`)
and its training log (`metrics.csv`). The key hashes everything that determines the stage — the code's stage
format, the model and its initial weights (the backbone, its pre-trained weights, the head and the seed for a
first stage; the key of the stage before it otherwise), the typed stage settings, the dataset's content and
featurizer, the leakage exclusion set, seed/fold/protocol, the data settings and the trainer — so a run whose
stage has a key in the store loads it instead of training: Step III on Dataset1, Dataset2 and MIX and the AFLOW
row all share one eform → AGL stage per seed. Concurrent jobs that need the same stage wait on a lock, then reuse.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from paraisite.files import write_json
from paraisite.paths import cache_dir

STAGE_FORMAT = 2  # bump when a change alters what a stage computes (2: the κ loss below zero, transforms.py)


def stage_key(identity: dict) -> str:
    text = json.dumps({"format": STAGE_FORMAT, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class StageStore:
    def __init__(self, root: Path | None = None):
        self.root = (root or cache_dir()) / "stages"

    def find(self, key: str) -> Path | None:
        """The folder of a finished stage with this key, if stored."""
        folder = self.root / key
        return folder if (folder / "stage.json").is_file() and (folder / "best.ckpt").is_file() else None

    @contextmanager
    def claim(self, key: str) -> Iterator[None]:
        """Hold the key's lock: a second job needing the same stage waits here until the first has stored it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def publish(self, key: str, best_checkpoint: Path, record: dict, log_csv: Path) -> Path:
        """Store a finished stage (copied into a temp folder, then renamed: a reader never sees half of one)."""
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(best_checkpoint, tmp / "best.ckpt")
        if log_csv.is_file():
            shutil.copy2(log_csv, tmp / "metrics.csv")
        write_json(tmp / "stage.json", record)
        os.replace(tmp, self.root / key)
        return self.root / key
