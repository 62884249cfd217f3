"""`Target`: what a run predicts, decided once from the `data` config and stored in results.json and model.pt.

κ (`kappa`): positive and log-distributed: log10(κ + `log_offset`) standardised (offset 1 as published; 0: a plain
log), MAPE loss on the κ scale, MAPE selects checkpoints, scored on every LTC test set. Any other property
(`generic`): standardised, L1 loss, MAE selects. `centre`: what a standardised 0 means: the mean of the transformed
training targets (`mean`, as published) or the constant that minimises the stage's loss on them (`loss`: for the MAPE
the 1/κ-weighted median κ, far below the mean of the logs where low κ abound), so a fresh head starts there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from paraisite.data.transforms import LogStandardizer, Standardizer
from paraisite.errors import ConfigError

KINDS = ("kappa", "generic")
CENTRES = ("mean", "loss")


@dataclass(frozen=True)
class Target:
    kind: str = "kappa"
    name: str = "kappa"  # the property (the data set's name for generic targets)
    unit: str = "W/mK"  # of MAE / RMSE
    log_offset: float = 1.0  # κ: the network learns standardised log10(κ + log_offset)
    centre: str = "mean"  # what a standardised 0 means (module docstring)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"data.target={self.kind!r} is not allowed (one of {', '.join(KINDS)})")
        number = isinstance(self.log_offset, (int, float)) and not isinstance(self.log_offset, bool)
        if not (number and 0 <= self.log_offset < float("inf")):
            raise ConfigError(f"data.log_offset={self.log_offset!r}: needs a number ≥ 0 (κ is learnt as "
                              "log10(κ + log_offset))")
        if self.centre not in CENTRES:
            raise ConfigError(f"data.centre={self.centre!r} is not allowed (one of {', '.join(CENTRES)})")

    @classmethod
    def from_data_config(cls, data) -> Target:
        """From a `data` config node: `target` (kappa | generic), `name`, `unit`, `log_offset` (κ), `centre`."""
        kind = data.get("target", "kappa")
        centre = data.get("centre", cls.centre)
        if kind == "kappa":
            return cls("kappa", "kappa", data.get("unit") or "W/mK", data.get("log_offset", cls.log_offset), centre)
        return cls(kind, str(data.get("name", "")), str(data.get("unit") or ""), centre=centre)

    @classmethod
    def of_results(cls, results: dict) -> Target:
        """The target a results.json states (files of format 1 state none: κ results are those with MAPE)."""
        if "target" in results:
            return cls(**results["target"])
        kappa = all("mape" in m for m in results.get("test", {}).values())
        return cls() if kappa else cls("generic", str(results.get("config", {}).get("data", "")),
                                       results.get("unit", ""))

    @property
    def is_kappa(self) -> bool:
        return self.kind == "kappa"

    @property
    def monitor(self) -> str:
        """The validation metric that selects checkpoints and heads the tables."""
        return "mape" if self.is_kappa else "mae"

    @property
    def metrics(self) -> tuple[str, ...]:
        if self.is_kappa:
            return ("mape", "mae", "log_mae", "log_rmse", "r2", "spearman")
        return ("mae", "rmse", "r2", "spearman")

    @property
    def loss(self) -> str:
        """What `loss: auto` means for this target."""
        return "mape" if self.is_kappa else "l1"

    def transform(self) -> Standardizer:
        return LogStandardizer(offset=self.log_offset) if self.is_kappa else Standardizer()

    def to_json(self) -> dict:
        return asdict(self)


def selection_score(results: dict) -> tuple[str, float]:
    """(key, value) of what a run is selected on in sweeps: the final stage's best validation score
    (`best_val_mape` for κ, `best_val_mae` otherwise), measured on that stage's validation split — never on a test
    split, except under protocol=paper, whose validation split is the test split."""
    key = f"best_val_{Target.of_results(results).monitor}"
    return key, float(results["stages"][-1][key])
