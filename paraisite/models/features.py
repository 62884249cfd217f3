"""Feature extraction: a backbone layer's activations feed a scikit-learn regressor.

The fitted regressor is stored with skops (no pickle: loading accepts only the types listed in `TRUSTED`) as a
uint8 buffer of `SklearnHead`, so `model.pt` stays one self-contained, `weights_only` file; a copy is written beside
the run as `regressor/<stage>.skops` for use in scikit-learn directly.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch

from paraisite.contracts import Head
from paraisite.errors import ParaisiteError

log = logging.getLogger(__name__)

TRUSTED = [  # beyond skops' own defaults (estimators, numpy arrays)
    "sklearn.tree._tree.Tree",  # random_forest
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # hist_gradient_boosting
]
# Small grids searched on the stage's validation split (`<model>_search` regressors): every candidate is fitted on
# the training split, the one with the best validation score is kept (never refitted, never the test split).
SEARCH_GRIDS = {
    "random_forest": {"min_samples_leaf": [1, 2, 5], "max_features": [1.0, 0.33]},
    "hist_gradient_boosting": {"learning_rate": [0.03, 0.1], "max_leaf_nodes": [15, 31, 63]},
}
SEARCHES = {"random_forest_search": "random_forest", "hgb_search": "hist_gradient_boosting"}


def make_regressor(name: str, seed: int, **params):
    """A fresh scikit-learn regressor: `random_forest` (100 trees, min_samples_leaf 2), `hist_gradient_boosting`
    (300 iterations, early stopping on 10 % of the training split), `ridge` (RidgeCV); `params` override the defaults."""
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import RidgeCV

    if name == "random_forest":
        return RandomForestRegressor(**{"n_estimators": 100, "min_samples_leaf": 2, "n_jobs": -1,
                                        "random_state": seed, **params})
    if name == "hist_gradient_boosting":
        return HistGradientBoostingRegressor(**{"max_iter": 300, "learning_rate": 0.1, "max_leaf_nodes": 31,
                                                "early_stopping": True, "random_state": seed, **params})
    return RidgeCV(**{"alphas": np.logspace(-4, 4, 17), **params})


def candidates(grid: dict[str, list]) -> list[dict]:
    """Every combination of a grid, in order."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def fit_regressor(name: str, seed: int, x_train, z_train, x_val, score, metric: str = "score") -> tuple[object, dict]:
    """(fitted regressor, what to record) for regressor `name`. A `*_search` name fits each candidate of its grid
    on the training split and keeps the one with the lowest `score(predictions on x_val)` (the stage's validation
    metric, named `metric`); the record lists every candidate's score and the winner."""
    if name not in SEARCHES:
        return make_regressor(name, seed).fit(x_train, z_train), {}
    model, tried, best = SEARCHES[name], [], None
    for params in candidates(SEARCH_GRIDS[model]):
        regressor = make_regressor(model, seed, **params).fit(x_train, z_train)
        value = float(score(regressor.predict(x_val)))
        tried.append({"params": params, f"val_{metric}": value})
        log.info("%s %s: validation %s %.6g", model, params, metric, value)
        if best is None or value < best[0]:
            best = (value, regressor, params)
    return best[1], {"search": {"model": model, "best_params": best[2], f"best_val_{metric}": best[0],
                                "candidates": tried}}


def load_regressor(data: bytes, source: str = "regressor"):
    """A scikit-learn estimator from skops bytes; refuses any type outside skops' defaults and `TRUSTED`."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(data=data)) - set(TRUSTED)
    except Exception as exc:  # not a skops file at all
        raise ParaisiteError(f"{source}: not a skops file ({type(exc).__name__}: {exc})") from None
    if untrusted:
        raise ParaisiteError(f"{source}: refusing to load types {sorted(untrusted)} (safe loading refuses anything "
                             f"beyond scikit-learn estimators and {', '.join(TRUSTED)}); the feature regressor was not "
                             "loaded")
    return sio.loads(data, trusted=TRUSTED)


class SklearnHead(Head):
    """Features → standardised prediction by a fitted scikit-learn regressor (kept as skops bytes)."""

    def __init__(self, in_dim: int = 0, regressor=None):
        import skops.io as sio

        super().__init__()
        self.in_dim, self.regressor = in_dim, regressor
        data = bytearray(sio.dumps(regressor)) if regressor is not None else bytearray()
        self.register_buffer("skops", torch.frombuffer(data, dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        data = state_dict.get(prefix + "skops")
        if data is not None:
            self.skops = data.clone()
            self.regressor = load_regressor(data.numpy().tobytes(), f"{prefix}skops (the stored regressor)")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.regressor is None:
            raise ParaisiteError("feature regressor not fitted")
        z = self.regressor.predict(features.detach().double().cpu().numpy())
        return torch.as_tensor(z, dtype=features.dtype, device=features.device)

    def reset_parameters(self) -> None:
        raise ParaisiteError("a feature-extraction stage must be the last of a chain")

    def stored_config(self) -> dict:
        return {"_target_": "paraisite.models.features.SklearnHead"}


@torch.inference_mode()
def activations(module, loader) -> tuple[np.ndarray, np.ndarray]:
    """(backbone features, targets) of every batch of `loader`, in eval mode."""
    module.eval()
    feats, targets = [], []
    for batch in loader:
        batch = module.transfer_batch_to_device(batch, module.device, 0)
        feats.append(module.backbone(batch).double().cpu())
        targets.append(batch.y.double().cpu())
    return torch.cat(feats).numpy(), torch.cat(targets).numpy()
