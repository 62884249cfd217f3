"""Two rows' out-of-fold ensembles, paired: MAPE of A − B on the same materials (95 % paired bootstrap interval over
materials, permutation p). Each side is a row's ensemble (per material, the mean of its out-of-fold predictions over
the repeats), a committee "A & B" (the mean of the rows' ensembles), or with a decoder of
`scripts/decode_committee.py` after its label (each fold's parameters fitted on the other folds): `+bte` that
ensemble with the phonon-BTE prior, `+anharmonic` times exp(−a − b·σᴬ) (both read the tables named by --bte),
`+factor` times exp(−a).
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
from decode_committee import anharmonicity_of, bte_prior, decode, member_ensemble, with_anharmonicity, with_prior

from paraisite.prior import physical_kappa
from paraisite.report import find_runs, summarize
from paraisite.stats import Repeat, paired, rng_for

DECODERS = ("+bte", "+anharmonic", "+factor")  # a side's label may end in one (module docstring)
NEEDS_TABLES = ("+bte", "+anharmonic")


def split(spec: str) -> tuple[str, str]:
    """(the row's label, its decoder suffix or "")."""
    return next(((spec.removesuffix(d), d) for d in DECODERS if spec.endswith(d)), (spec, ""))


def side(rows: list[dict], spec: str, test: str, ids: np.ndarray, physical: dict | None) -> Repeat:
    """The ensemble of `spec`'s row on `ids` (sorted), decoded as its suffix says."""
    name, decoder = split(spec)
    own = member_ensemble(rows, name, test)
    keep = np.flatnonzero(np.isin(own.ids, ids))
    own = own.subset(keep[np.argsort(own.ids[keep])])  # both sides in the order of `ids`
    if decoder in NEEDS_TABLES and physical is None:
        raise SystemExit(f"{spec}: name the BTE tables (--bte)")
    z = np.log(own.pred)
    if decoder == "+bte":
        pred = with_prior(z, own.true, bte_prior(own.ids, test, physical, z))[0]
    elif decoder == "+anharmonic":
        pred = with_anharmonicity(own.pred, own.true, anharmonicity_of(own.ids, physical))[0]
    elif decoder == "+factor":
        pred = decode(z, np.zeros_like(z), own.true, np.zeros(1))[0]
    else:
        return own
    return Repeat(spec, own.ids, own.true, pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run or sweep folders")
    parser.add_argument("--test", required=True, help="the test set scored")
    parser.add_argument("--bte", nargs="+", default=None,
                        help="`paraisite bte` tables (for a side ending in +bte or +anharmonic)")
    parser.add_argument("--rows", nargs=2, required=True, metavar=("A", "B"),
                        help="the two rows (labels; ending in +bte, +anharmonic or +factor: decoded)")
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
    ids = functools.reduce(np.intersect1d, (member_ensemble(rows, split(s)[0], args.test).ids
                                            for pair in fold_sets for rows, s in zip(pair, (args.a, args.b))))
    a, b = ([side(pair[k], spec, args.test, ids, physical) for pair in fold_sets] for k, spec in enumerate(args.rows))
    r = paired(a, b, "mape", "kappa", rng_for("paired ensembles", args.a, args.b, args.test))
    print(f"| {args.a} | {args.b} | {args.test} | {r['a']:.3f} | {r['b']:.3f} | {r['diff']:+.3f} "
          f"[{r['lo']:+.3f}, {r['hi']:+.3f}] | {r['p']:.3g} | {len(ids)} |")


if __name__ == "__main__":
    main()
