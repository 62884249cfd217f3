"""Per-seed splits of one source's records into {train, val, test} index arrays.

`holdout` (the honest number): a random test fraction, validation carved from the rest. `paper` (upstream's
protocol): the same test fraction also selects the checkpoint (val = test). `cv`: k folds by a random permutation
per seed (repeats = seeds); fold `fold` is the test split and validation is carved from the other folds, so every
record is a test prediction exactly once per seed. `cv_val_slice`: `next_fold` (fold f's validation is the head of
fold f+1, then f+2 …: the folds' validation slices are disjoint while `val_fraction` ≤ 1/(folds-1), so a score
averaged over the folds' validation slices covers as many records as they hold) or `leading` (before: the head of
the permutation outside the test fold, nearly the same records in every fold). `final`: no test split (the final model on all the data, validation
carved as in holdout). `test`: `carved` (the protocol's), `none` (no test split:
train and validation only, for a user-given test file), `all` (everything is test: scoring that file).
"""

from __future__ import annotations

import numpy as np

PROTOCOLS = ("holdout", "paper", "cv", "final")
TEST_MODES = ("carved", "none", "all")
CV_VAL_SLICES = ("next_fold", "leading")


def split_indices(n: int, seed: int, protocol: str = "holdout", test_fraction: float = 0.2,
                  val_fraction: float = 0.15, folds: int = 5, fold: int | None = None,
                  test: str = "carved", cv_val_slice: str = "next_fold") -> dict[str, np.ndarray]:
    """Index arrays {train, val, test} over n records; `val_fraction` is a fraction of the non-test part."""
    if protocol not in PROTOCOLS or test not in TEST_MODES or cv_val_slice not in CV_VAL_SLICES:
        raise ValueError(f"unknown protocol {protocol!r}, test mode {test!r} or cv_val_slice {cv_val_slice!r}")
    perm = np.random.default_rng(seed).permutation(n)
    empty = np.zeros(0, dtype=perm.dtype)
    if test == "all":
        return {"train": empty, "val": empty, "test": np.arange(n)}
    if test == "none" or protocol == "final":
        held, rest = empty, perm
    elif protocol == "cv":
        distance = (np.arange(n) - fold) % folds  # permutation position → 0: the test fold, 1: the next fold, …
        order = np.argsort(distance, kind="stable") if cv_val_slice == "next_fold" else np.arange(n)
        held, rest = perm[distance == 0], perm[order][distance[order] > 0]
    else:
        n_test = int(round(test_fraction * n))
        held, rest = perm[:n_test], perm[n_test:]
    if protocol == "paper" and test == "carved":
        return {"train": np.sort(rest), "val": np.sort(held), "test": np.sort(held)}
    n_val = max(1, int(round(val_fraction * len(rest))))
    return {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": np.sort(held)}
