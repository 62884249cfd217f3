"""Two rows' out-of-fold ensembles, paired: MAPE of A − B on the same materials (95 % paired bootstrap interval over
materials, permutation p). Each side is a row's ensemble (per material, the mean of its out-of-fold predictions over
the repeats), a committee "A & B" (the mean of the rows' ensembles), or with `+bte` after its label that ensemble with
the phonon-BTE prior of `scripts/decode_committee.py` (the `bte` decoder: each fold's weights fitted on the other
folds; --bte names the tables).
    python scripts/paired_ensembles.py outputs/bte_input_cv --test dataset1 --bte docs/results/bte/*.csv \
        --rows "megnet_bte/eform/dft/dataset1 [cv]" "megnet/eform/dft/dataset1 [cv]+bte"
    python scripts/paired_ensembles.py outputs/new --b-runs outputs/old --test mix --rows "R [cv]" "R [cv]"
`--also FOLDERS` (repeatable): the same two rows on another fold set, read from these folders; the difference pools
the fold sets (each a repeat of the pair: per material the mean of its paired differences; the bootstrap draws
materials, the same in every fold set).
    python scripts/paired_ensembles.py outputs/electrons_cv --also outputs/electrons_cv20 outputs/bte_loss_cv \
        --test dataset2 --rows "m3gnet_bte_electrons/eform/dft/dataset2 [cv]" "m3gnet_bte_amorphous/eform/dft/dataset2 [cv]"
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
from decode_committee import bte_prior, member_ensemble, with_prior

from paraisite.prior import physical_kappa
from paraisite.report import find_runs, summarize
from paraisite.stats import Repeat, paired, rng_for

PRIOR = "+bte"


def side(rows: list[dict], spec: str, test: str, ids: np.ndarray, physical: dict | None) -> Repeat:
    """The ensemble of `spec`'s row on `ids` (sorted), with the BTE prior where `spec` ends in +bte."""
    name = spec.removesuffix(PRIOR)
    own = member_ensemble(rows, name, test)
    keep = np.flatnonzero(np.isin(own.ids, ids))
    own = own.subset(keep[np.argsort(own.ids[keep])])  # both sides in the order of `ids`
    if spec.endswith(PRIOR):
        if physical is None:
            raise SystemExit(f"{spec}: name the BTE tables (--bte)")
        z = np.log(own.pred)
        own = Repeat(spec, own.ids, own.true, with_prior(z, own.true, bte_prior(own.ids, test, physical, z))[0])
    return own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run or sweep folders")
    parser.add_argument("--test", required=True, help="the test set scored")
    parser.add_argument("--bte", nargs="+", default=None, help="`paraisite bte` tables (for a side ending in +bte)")
    parser.add_argument("--rows", nargs=2, required=True, metavar=("A", "B"),
                        help="the two rows (labels; ending in +bte: with the BTE prior)")
    parser.add_argument("--b-runs", nargs="+", default=None, metavar="FOLDER",
                        help="read B's row from these folders alone (the same label trained by other code, e.g.)")
    parser.add_argument("--also", nargs="+", action="append", default=[], metavar="FOLDER",
                        help="both rows on another fold set, read from these folders; pooled with the first")
    args = parser.parse_args()
    args.a, args.b = args.rows
    rows_a = summarize(find_runs(args.runs), n_boot=1)
    fold_sets = [(rows_a, summarize(find_runs(args.b_runs), n_boot=1) if args.b_runs else rows_a)]
    fold_sets += [(rows, rows) for rows in (summarize(find_runs(folders), n_boot=1) for folders in args.also)]
    physical = physical_kappa(args.bte) if args.bte else None
    ids = functools.reduce(np.intersect1d, (member_ensemble(rows, s.removesuffix(PRIOR), args.test).ids
                                            for pair in fold_sets for rows, s in zip(pair, (args.a, args.b))))
    a, b = ([side(pair[k], spec, args.test, ids, physical) for pair in fold_sets] for k, spec in enumerate(args.rows))
    r = paired(a, b, "mape", "kappa", rng_for("paired ensembles", args.a, args.b, args.test))
    print(f"| {args.a} | {args.b} | {args.test} | {r['a']:.3f} | {r['b']:.3f} | {r['diff']:+.3f} "
          f"[{r['lo']:+.3f}, {r['hi']:+.3f}] | {r['p']:.3g} | {len(ids)} |")


if __name__ == "__main__":
    main()
