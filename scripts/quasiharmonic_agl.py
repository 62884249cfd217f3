"""How close backbone=quasiharmonic's Slack κ comes to AFLOW AGL's own 300 K values (the same model on DFT's
equation of state): Spearman ρ and the ratio over the AGL set (the featurizer's cache; the first call computes it,
~10 min on one core); and each feature's mean and standard deviation there (`paraisite.models.quasiharmonic`'s
standardisation constants). No DFT test set is read.

    python scripts/quasiharmonic_agl.py
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from paraisite.data.datasets import featurized
from paraisite.models.quasiharmonic import FEATURES, QuasiHarmonicFeaturizer


def main() -> None:
    data = featurized("agl", QuasiHarmonicFeaturizer())
    usable = np.array([not f for f in data.flags])
    x, agl = data.x[usable].double().numpy(), data.target[usable].numpy()
    print(f"AGL structures: {len(data.flags)}, usable {int(usable.sum())}, flagged {int((~usable).sum())} "
          f"({', '.join(sorted({f.split(':')[0] for f in data.flags if f}))})")
    for name in ("ln kappa_slack_300K", "ln kappa_slack_gamma2_300K"):
        slack = np.exp(x[:, FEATURES.index(name)])
        log_ratio = np.log10(slack / agl)
        print(f"{name}: Spearman ρ with AGL κ {spearmanr(slack, agl)[0]:.3f}; log10(Slack / AGL) median "
              f"{np.median(log_ratio):+.3f}, MAE {np.mean(np.abs(log_ratio)):.3f}, within a factor 2 "
              f"{np.mean(np.abs(log_ratio) < np.log10(2)):.2f}")
    print("AGL_MEAN =", tuple(round(float(v), 4) for v in x.mean(0)))
    print("AGL_STD =", tuple(round(float(v), 4) for v in x.std(0)))


if __name__ == "__main__":
    main()
