"""Per-seed splits. `paper`: random 80/20, the 20 % selects and reports. `holdout`: same 20 % test,
validation carved from the 80 % (the honest number)."""

from __future__ import annotations

import numpy as np

PROTOCOLS = ("paper", "holdout")


def split_indices(n: int, seed: int, protocol: str = "holdout", test_fraction: float = 0.2,
                  val_fraction: float = 0.15) -> dict[str, np.ndarray]:
    """Index arrays {train, val, test} over n records; `val_fraction` is a fraction of the non-test part."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    test, rest = perm[:n_test], perm[n_test:]
    if protocol == "paper":
        return {"train": np.sort(rest), "val": np.sort(test), "test": np.sort(test)}
    n_val = max(1, int(round(val_fraction * len(rest))))
    return {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": np.sort(test)}
