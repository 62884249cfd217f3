"""One process per run folder: an exclusive, non-blocking `flock` on `<run_dir>/.lock`, held for the whole run.

The kernel releases the lock when its process ends, however it ends (SIGKILL included), so a relaunch after a crash
is never blocked by a stale lock; a second process started while the first still runs is refused.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from paraisite.errors import ParaisiteError

LOCK_FILE = ".lock"
PROBE_WAIT_S = 0.2  # longer than `is_running` holds its shared lock


class RunFolderBusy(ParaisiteError):
    """Another live process holds the run folder; nothing in it was touched."""


def is_running(run_dir: str | os.PathLike) -> bool:
    """Whether a live process holds `run_dir`'s lock (a run in progress). Writes nothing; holds a shared lock for an
    instant, which `RunLock` waits out (it tries again once before refusing)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        with open(path) as file:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    except OSError:  # no lock file: never started here, or a version without locks
        return False
    return False


class RunLock:
    """`RunLock(run_dir)` takes the lock (or raises RunFolderBusy); `release()`, or the end of the process,
    gives it back."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self.file = open(self.path, "a+")
        try:
            try:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a run holds it, or `is_running` probes it for an instant: ask once more
                time.sleep(PROBE_WAIT_S)
                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunFolderBusy(f"{run_dir}: another process ({holder}) is running in this run folder and holds "
                                f"{self.path}; wait for it to finish, or pick another hydra.run.dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
