"""Typed settings read from the config: a stage of a chain, the data module, source pre-training.

Every key and every value is checked here, before anything is written: an unknown key stops the run with one line
naming the key, where it was given, a close match and the valid keys; a value of the wrong type or out of range
names the key, the value and what is allowed. Defaults live in `conf/train.yaml` only.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from paraisite.data.splits import CV_VAL_SLICES, PROTOCOLS  # noqa: F401  (PROTOCOLS re-exported: checked here)
from paraisite.errors import ConfigError

LOSSES = ("auto", "mape", "l1")  # auto: the target's own loss (MAPE for κ, L1 otherwise)
POLICIES = ("all", "head", "reinit_head", "features")
REGRESSORS = ("random_forest", "hist_gradient_boosting", "ridge", "random_forest_search", "hgb_search")
ON_BAD = ("error", "skip")


def rule(*, low: float | None = None, high: float | None = None, open_low: bool = False, open_high: bool = False,
         choices: tuple[str, ...] | None = None, nonzero: bool = False):
    """A field's allowed values: a range (closed unless `open_*`), a list of choices, or non-zero."""
    return field(metadata={"low": low, "high": high, "open_low": open_low, "open_high": open_high,
                           "choices": choices, "nonzero": nonzero})


def allowed(kind: type, meta: Mapping, optional: bool) -> str:
    """Words for what a field accepts, e.g. 'an integer ≥ 1 or null'."""
    if meta.get("choices"):
        text = "one of " + ", ".join(meta["choices"])
    else:
        text = "an integer" if kind is int else "a number" if kind is float else f"a {kind.__name__}"
        if meta.get("low") is not None:
            text += f" {'>' if meta.get('open_low') else '≥'} {meta['low']:g}"
        if meta.get("high") is not None:
            comma = "," if meta.get("low") is not None else ""
            text += f"{comma} {'<' if meta.get('open_high') else '≤'} {meta['high']:g}"
        if meta.get("nonzero"):
            text += " other than 0"
    return text + (" or null" if optional else "")


def check_value(key: str, value, kind: type, meta: Mapping, optional: bool, where: str):
    """`value` converted to `kind`, or a ConfigError naming key, value and what is allowed."""
    given = value

    def refuse():
        return ConfigError(f"{where}: {key}={given!r} is not allowed ({allowed(kind, meta, optional)})")

    if value is None:
        if optional:
            return None
        raise refuse()
    if kind is bool:
        if not isinstance(value, bool):
            raise refuse()
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse()
        if kind is int and (not float(value).is_integer()):
            raise refuse()
        value = kind(value)
        if not math.isfinite(value):
            raise refuse()
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (value < low or (meta.get("open_low") and value == low)):
            raise refuse()
        if high is not None and (value > high or (meta.get("open_high") and value == high)):
            raise refuse()
        if meta.get("nonzero") and value == 0:
            raise refuse()
        return value
    if not isinstance(value, kind):
        raise refuse()
    if meta.get("choices") and value not in meta["choices"]:
        raise refuse()
    return value


def refuse_unknown(keys, valid, where: str) -> None:
    """ConfigError for the first key of `keys` not in `valid`, with a close match and the valid keys."""
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")


def typed(cls, values: Mapping, where: str):
    """An instance of dataclass `cls` from `values`: unknown keys, missing keys and bad values refused."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    refuse_unknown(values, names, where)
    missing = [n for n in names if n not in values]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)} (declared in conf/train.yaml)")
    checked = {}
    for f in fields(cls):
        kind, optional = hints[f.name], False
        args = typing.get_args(kind)
        if type(None) in args:
            optional, kind = True, next(a for a in args if a is not type(None))
        checked[f.name] = check_value(f.name, values[f.name], kind, f.metadata, optional, where)
    return cls(**checked)


@dataclass(frozen=True)
class Stage:
    """One stage of a chain: what it trains on and how. Adam, the lr warmed up linearly over `warmup_steps`, then
    cosine decay to `final_lr_fraction` over `decay_steps` (0: over the rest of the stage); early stopping after
    `patience` epochs without a better validation score (null: off). With `ema_epochs` > 0 an exponential moving
    average of the weights (time constant: that many epochs) is what validation scores, the best checkpoint keeps and
    the stage ends with; 0: the raw weights. The best checkpoint is chosen among epochs ≥ `select_from_epoch`
    (0-based; earlier epochs are validated, never kept). With `refit` (last stage only) the stage is trained a second
    time from the same start, on its training and validation records together, for the best epoch's count of epochs;
    those final weights are the model (the validation split then chose the epoch count only).
    Policy `features` trains no network: the activations of backbone layer `features_layer` feed a scikit-learn
    `regressor` (last stage only).
    With `low_fidelity` (a dataset) the stage is multi-fidelity: that set's training split trains along with `data`'s,
    each record's fidelity given to the backbone as a state, the low-fidelity loss terms × `low_fidelity_weight`;
    `data` alone validates and tests."""

    name: str
    data: str
    low_fidelity: str | None
    epochs: int = rule(low=1)
    batch_size: int = rule(low=1)
    loss: str = rule(choices=LOSSES)
    lr: float = rule(low=0, open_low=True)
    backbone_lr_scale: float = rule(low=0)
    weight_decay: float = rule(low=0)
    warmup_steps: int = rule(low=0)
    decay_steps: int = rule(low=0)
    final_lr_fraction: float = rule(low=0, high=1)
    policy: str = rule(choices=POLICIES)
    patience: int | None = rule(low=1)
    regressor: str = rule(choices=REGRESSORS)
    features_layer: int = rule(nonzero=True)
    low_fidelity_weight: float = rule(low=0)
    ema_epochs: float = rule(low=0)
    select_from_epoch: int = rule(low=0)
    refit: bool = rule()

    @property
    def datasets(self) -> tuple[str, ...]:
        """What it trains on: `data`, then `low_fidelity` if any."""
        return (self.data, self.low_fidelity) if self.low_fidelity else (self.data,)


# Keys added after runs existed (of a stage, of the run: `calibrate`, or of `data`: `centre`), at the value that
# computes what those runs computed: at that value (or null) a key is no part of a run's identity (its folder key,
# its stored stages, its report row), so older runs stay the same runs and resume.
ADDED_KEYS = {"ema_epochs": 0, "select_from_epoch": 0, "refit": False, "calibrate": False, "centre": "mean"}


def without_added_keys(layer: Mapping) -> dict:
    """A config layer (or a `Stage` as a dict) without the `ADDED_KEYS` set to their neutral value or null."""
    return {k: v for k, v in layer.items() if not (k in ADDED_KEYS and v in (ADDED_KEYS[k], None))}


DATA_KEYS = ("data", "low_fidelity")  # what a stage trains on: set by the stage's own keys only
STAGE_KEYS = tuple(f.name for f in fields(Stage) if f.name not in ("name", *DATA_KEYS))  # what a config layer may set


@dataclass(frozen=True)
class DataSettings:
    """How a dataset is split and read (`datamodule` in conf/train.yaml)."""

    test_fraction: float = rule(low=0, high=1, open_low=True, open_high=True)
    val_fraction: float = rule(low=0, high=1, open_low=True, open_high=True)  # of the non-test part
    folds: int = rule(low=2)  # protocol=cv
    cv_val_slice: str = rule(choices=CV_VAL_SLICES)  # protocol=cv: where a fold's validation slice comes from
    limit: int | None = rule(low=2)
    on_bad: str = rule(choices=ON_BAD)
    num_workers: int = rule(low=0)


@dataclass(frozen=True)
class SourceTraining:
    """Source pre-training of a backbone the framework trains itself (ElemNet on a composition table): Adam, MAE
    loss, the lr warmed up linearly over `warmup_epochs`, then cosine decay to `final_lr_fraction` by the last epoch
    (1.0: constant), the weights of the best validation MAE kept; early stopping after `patience` epochs."""

    epochs: int = rule(low=1)
    batch_size: int = rule(low=1)
    lr: float = rule(low=0, open_low=True)
    warmup_epochs: int = rule(low=0)
    final_lr_fraction: float = rule(low=0, high=1)
    patience: int = rule(low=1)
    seed: int = rule(low=0)
    test_fraction: float = rule(low=0, high=1, open_low=True, open_high=True)
    val_fraction: float = rule(low=0, high=1, open_low=True, open_high=True)
    limit: int | None = rule(low=10)
