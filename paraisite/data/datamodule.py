"""`LTCDataModule`: one class for every dataset (named or a user's file), split per source and per seed;
`MultiFidelityDataModule`: a target set and a low-fidelity set, each split as on its own, trained together;
`WithValidationInTraining`: a stage's data whose training split also holds its validation records (a refit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from paraisite.contracts import HIGH_FIDELITY, LOW_FIDELITY, Batch, FeatureSet, Featurizer
from paraisite.data.datasets import featurized, sources_of
from paraisite.data.graphs import NO_NEIGHBORS
from paraisite.data.records import ELEMENT_NOT_IN_MODEL, NO_EQUILIBRIUM
from paraisite.data.splits import split_indices
from paraisite.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MODEL_LIMITS = (NO_NEIGHBORS, ELEMENT_NOT_IN_MODEL, NO_EQUILIBRIUM)


def not_lowest_of_formula(formulas: list[str], target: np.ndarray) -> np.ndarray:
    """True for every record but the one with the lowest target of its formula (the first of equals; no target
    counts as the highest)."""
    target = np.nan_to_num(target, nan=np.inf)
    lowest: dict[str, int] = {}
    for i, (formula, y) in enumerate(zip(formulas, target)):
        if formula not in lowest or y < target[lowest[formula]]:
            lowest[formula] = i
    keep = np.zeros(len(formulas), dtype=bool)
    keep[list(lowest.values())] = True
    return ~keep


def one_split_per_material(ids: list[str], splits: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) per record; a material (id, or formula when records are grouped by
    formula) in several records goes where its first occurrence went, so the same material never sits in two splits
    (of a union such as MIX, or of a table with several rows per formula)."""
    split_of = np.full(len(ids), -1)
    for k, name in enumerate(SPLITS):
        for idx in splits[name]:
            split_of[idx] = k
    first: dict[str, int] = {}
    for i, rid in enumerate(ids):
        split_of[i] = split_of[first.setdefault(rid, i)]
    return split_of


@dataclass(frozen=True)
class WithFidelity:
    """Collate of a multi-fidelity set: the feature set's batch with each record's fidelity."""

    data: FeatureSet
    fidelity: torch.Tensor  # per record of `data`

    def __call__(self, indices) -> Batch:
        batch = self.data.collate(indices)
        batch.fidelity = self.fidelity[torch.as_tensor(indices, dtype=torch.long)]
        return batch


class SplitData(L.LightningDataModule):
    """A featurized set (`data`) with {train, val, test} index arrays (`splits`), after `setup`; what was dropped
    (unusable) or excluded (leakage filter); `fidelity` per record in multi-fidelity sets (None: all high)."""

    def __init__(self, batch_size: int, num_workers: int):
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.data: FeatureSet | None = None
        self.fidelity: torch.Tensor | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.dropped: list[dict] = []
        self.n_excluded = 0

    @property
    def n_low_fidelity(self) -> int:
        """Low-fidelity records in the training split."""
        return 0 if self.fidelity is None else int((self.fidelity[self.splits["train"]] == LOW_FIDELITY).sum())

    def targets(self, split: str):
        return self.data.target[self.splits[split]]

    def formulas(self, split: str) -> set[str]:
        return {self.data.formulas[i] for i in self.splits[split]}

    def loader(self, split: str, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        collate = self.data.collate if self.fidelity is None else WithFidelity(self.data, self.fidelity)
        return DataLoader(self.splits[split].tolist(), batch_size=batch_size or self.batch_size, shuffle=shuffle,
                          collate_fn=collate, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


class LTCDataModule(SplitData):
    """Featurized dataset with {train, val, test} index splits; unusable records are dropped and reported.

    Splits follow `protocol` (holdout, paper, cv with `folds`, `fold` and `cv_val_slice`) per source and seed; `test` says whether
    the test split is the protocol's (`carved`), absent (`none`: a user-given test file scores the model) or
    everything (`all`: that file). `exclude_formulas` (reduced formulas) are removed from train/val only: the
    leakage filter for chains that train on one set and test on another. `group_by="formula"` keeps the records of
    one formula in one split (a formula-level split, for tables with several rows per formula: polymorphs);
    `per_formula="lowest"` keeps only the lowest-target record of each formula (formation energy: the ground state).
    """

    def __init__(self, dataset: str, featurizer: Featurizer, seed: int, protocol: str = "holdout",
                 batch_size: int = 8, test_fraction: float = 0.2, val_fraction: float = 0.15, folds: int = 5,
                 fold: int | None = None, test: str = "carved", limit: int | None = None, on_bad: str = "error",
                 num_workers: int = 0, data_dir: str | None = None, exclude_formulas: frozenset[str] = frozenset(),
                 group_by: str = "id", per_formula: str = "all", cv_val_slice: str = "next_fold"):
        super().__init__(batch_size, num_workers)
        if group_by not in ("id", "formula") or per_formula not in ("all", "lowest"):
            raise ValueError(f"group_by: id or formula (not {group_by!r}); per_formula: all or lowest (not "
                             f"{per_formula!r})")
        self.group_by, self.per_formula = group_by, per_formula
        self.n_not_lowest = 0
        self.dataset, self.featurizer, self.seed, self.protocol = dataset, featurizer, seed, protocol
        self.limit, self.on_bad = limit, on_bad
        self.test_fraction, self.val_fraction, self.data_dir = test_fraction, val_fraction, data_dir
        self.folds, self.fold, self.test, self.cv_val_slice = folds, fold, test, cv_val_slice
        self.exclude_formulas = frozenset(exclude_formulas)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        parts, splits, offset = [], {k: [] for k in SPLITS}, 0
        for source in sources_of(self.dataset):
            data = featurized(source, self.featurizer, self.data_dir, self.on_bad, self.limit)
            self._check(source, data)
            for name, idx in split_indices(len(data), self.seed, self.protocol, self.test_fraction,
                                           self.val_fraction, self.folds, self.fold, self.test,
                                           self.cv_val_slice).items():
                splits[name].append(idx + offset)
            parts.append(data)
            offset += len(data)
        self.data = self.featurizer.concat(parts)
        val_is_test = self.protocol == "paper" and self.test == "carved"
        if val_is_test:  # the test split also selects the checkpoint: val is an alias of test
            splits["val"] = []
        formulas = self.data.formulas
        split_of = one_split_per_material(formulas if self.group_by == "formula" else self.data.ids, splits)
        if self.per_formula == "lowest":
            not_lowest = not_lowest_of_formula(formulas, self.data.target.numpy())
            split_of[not_lowest] = -1  # in no split
            self.n_not_lowest = int(not_lowest.sum())
            log.info("%s: kept the lowest target of each formula, left out %d record(s)", self.dataset,
                     self.n_not_lowest)
        flags = [f or ("no_target" if t != t else "") for f, t in zip(self.data.flags, self.data.target.tolist())]
        for name in SPLITS:
            idx = np.flatnonzero(split_of == SPLITS.index(name))
            self.dropped += [{"id": self.data.ids[i], "split": name, "reason": flags[i]} for i in idx if flags[i]]
            keep = np.array([not flags[i] for i in idx], dtype=bool)
            if name != "test" and self.exclude_formulas:
                leak = np.array([formulas[i] in self.exclude_formulas for i in idx], dtype=bool)
                self.n_excluded += int((keep & leak).sum())
                keep &= ~leak
            self.splits[name] = idx[keep]
        if val_is_test:
            self.splits["val"] = self.splits["test"]
        if self.dropped:
            log.warning("%s: dropped %d unusable record(s): %s", self.dataset, len(self.dropped),
                        ", ".join(f"{d['id']} ({d['reason']})" for d in self.dropped))
        if self.n_excluded:
            log.info("%s: left out %d training/validation record(s) whose formula is in a test split",
                     self.dataset, self.n_excluded)
        for name in ("train", "val") if self.test != "all" else ("test",):
            if len(self.splits[name]) == 0:
                raise DataError(f"dataset {self.dataset}: the {name} split is empty (too few usable records)")

    def _check(self, source: str, data) -> None:
        """Records no model can use stop the run; valid data this backbone cannot represent (cells without
        neighbours, elements outside its list) is dropped and listed instead."""
        bad = [f"{i}: {f}" for i, f in zip(data.ids, data.flags) if f and not f.startswith(MODEL_LIMITS)]
        bad += [f"{i}: no target value" for i, t in zip(data.ids, data.target.tolist()) if t != t]
        if bad and self.on_bad != "skip":
            raise DataError(f"{source}: {len(bad)} bad record(s): " + "; ".join(bad))


class MultiFidelityDataModule(SplitData):
    """A multi-fidelity stage's data: the target set (`high`) and a low-fidelity set (`low`), each split, filtered
    and excluded exactly as on its own (so the target's splits are those of a single-fidelity stage, seed and fold
    alike). Training: both training splits (`low`'s holds the records a single-fidelity stage on it trains on);
    validation and test: `high`'s only (`low`'s are never used)."""

    def __init__(self, high: LTCDataModule, low: LTCDataModule):
        super().__init__(high.batch_size, high.num_workers)
        self.high, self.low = high, low

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        high, low = self.high, self.low
        high.setup()
        low.setup()
        n = len(high.data)
        self.data = high.featurizer.concat([high.data, low.data])
        self.fidelity = torch.cat([torch.full((n,), HIGH_FIDELITY), torch.full((len(low.data),), LOW_FIDELITY)])
        self.splits = {"train": np.concatenate([high.splits["train"], low.splits["train"] + n]),
                       "val": high.splits["val"], "test": high.splits["test"]}
        self.dropped, self.n_excluded = high.dropped + low.dropped, high.n_excluded + low.n_excluded


class WithValidationInTraining(SplitData):
    """`base` with its validation records added to its training split (a refit: the validation split chose the
    epoch count before); validation and test unchanged, so validation scores then measure fit, not generalisation."""

    def __init__(self, base: SplitData):
        super().__init__(base.batch_size, base.num_workers)
        self.base = base

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        base = self.base
        base.setup()
        self.data, self.fidelity, self.dropped, self.n_excluded = base.data, base.fidelity, base.dropped, base.n_excluded
        self.splits = {**base.splits, "train": np.concatenate([base.splits["train"], base.splits["val"]])}
