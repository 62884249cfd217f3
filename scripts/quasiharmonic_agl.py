"""How close backbone=quasiharmonic's Slack κ comes to AFLOW AGL's own 300 K values (the same model on DFT's
equation of state): Spearman ρ and the ratio over the AGL set (the featurizer's cache; the first call computes it,
~10 min on one core). No DFT test set is read.

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
    slack = np.exp(data.x[usable, FEATURES.index("ln kappa_slack_300K")].double().numpy())
    agl = data.target[usable].numpy()
    log_ratio = np.log10(slack / agl)
    print(f"AGL structures: {len(data.flags)}, usable {int(usable.sum())}, flagged {int((~usable).sum())} "
          f"({', '.join(sorted({f.split(':')[0] for f in data.flags if f}))})")
    print(f"Spearman ρ(Slack κ from CHGNet, AGL κ) = {spearmanr(slack, agl)[0]:.3f}")
    print(f"log10(Slack / AGL): median {np.median(log_ratio):+.3f}, MAE {np.mean(np.abs(log_ratio)):.3f}, "
          f"within a factor 2: {np.mean(np.abs(log_ratio) < np.log10(2)):.2f}")


if __name__ == "__main__":
    main()
