"""`paraisite` console script: data checks, reports, predictions (train with `python train.py`)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from paraisite.errors import ParaisiteError


def data_check(args) -> int:
    from paraisite.data.mirror import check
    from paraisite.paths import data_dir

    report = check(args.data_dir)
    print(f"data folder {data_dir(args.data_dir)}: {len(report['ok'])} ok, {len(report['missing'])} missing, "
          f"{len(report['corrupt'])} corrupt")
    for kind in ("missing", "corrupt"):
        for rel in report[kind]:
            print(f"  {kind}: {rel}")
    return 1 if report["missing"] or report["corrupt"] else 0


def data_fetch(args) -> int:
    from paraisite.data.fetch import fetch

    counts = fetch(args.dest, args.only.split(",") if args.only else None, args.paraisite_repo)
    print(f"fetched into {args.dest}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def report(args) -> int:
    from paraisite.report import markdown, write_report

    rows = write_report(args.runs, args.output, args.metric, args.compare or (), args.committee or (),
                        args.experts or (), args.select or ())
    print(markdown(rows, args.metric))
    extra = [name for name, given in (("comparisons", args.compare), ("committees", args.committee),
                                      ("selections", args.select)) if given]
    for name in extra:
        print((Path(args.output) / f"{name}.md").read_text())
    print(f"wrote {args.output}/table.csv, table.md, row_configs.md, heatmap.png, curves.png"
          + "".join(f", {name}.md" + (f", {name}.csv" if name != "selections" else "") for name in extra))
    return 0


def predict(args) -> int:
    from dataclasses import replace

    from paraisite.predict import PREDICT_BATCH, load_ensemble, predict

    device = device_of(args.device)
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() - 1) if device == "cuda" else 0)
    if not args.run and not args.model:
        raise ParaisiteError("give the models: --run RUN (finished runs) and/or --model NAME|DIR (a model bundle; "
                             "shipped: kappa)")
    runs, row = args.run or [], ""
    if args.row is not None:  # one row of `paraisite report`: e.g. the k folds × repeats of a cv grid point
        from paraisite.report import row_runs

        row, runs = row_runs(runs, args.row)
        if not runs:
            raise ParaisiteError(f"--row {args.row!r}: row {row} has no finished run")
    members = load_ensemble(runs, device, args.data_dir, args.model or [])
    if args.interval_cv:
        if args.model:
            raise ParaisiteError("--interval-cv calibrates the --run models; a bundle carries its own interval "
                                 "(paraisite bundle --interval-cv)")
        interval = interval_for("the --run folders", tuple(Path(m.path) for m in members), cv_rows(args.interval_cv),
                                args.level)
        members = [replace(m, interval=interval) for m in members]
    physical = None
    if args.bte:
        from paraisite.prior import bte_tables

        physical = bte_tables(args.bte)
    progress = None if args.quiet else predict_progress(args.inputs, args.progress_every)
    counts = predict(args.inputs, members, args.output, args.chunk_size, args.batch_size or PREDICT_BATCH, args.top,
                     args.below, workers, progress, physical)
    if progress is not None:
        progress.close()
    far = f" ({counts['extrapolated']} far outside a member's training range: column extrapolation)" \
        if counts["extrapolated"] else ""
    of_row = f" (row {row})" if row else ""
    routes = counts["routes"]
    of_row += f" in {len(routes)} route(s) ({', '.join(routes)}: column route)" if routes else ""
    blended = f"; {counts['blended']} blended with their BTE κ (column bte_note: why not)" if args.bte else ""
    print(f"{counts['models']} model(s){of_row}; {counts['predicted']} predicted{far}, {counts['flagged']} flagged"
          f"{blended} → {args.output}")
    if args.top:
        from rich.console import Console
        from rich.table import Table

        what = "κ" if counts["column"] == "kappa" else "predicted"
        table = Table(title=f"{len(counts['top'])} lowest-{what} candidates ({what} < {args.below:g})")
        notes = any(c["extrapolation"] for c in counts["top"])
        level = [f"{counts['interval_level']} % interval"] if counts["interval_level"] else []
        numbers = (f"{what} mean", "std", "rel. std", *level)
        for column in ("id", "formula", *numbers, *(["extrapolation"] if notes else [])):
            table.add_column(column, justify="right" if column in numbers else "left")
        for c in counts["top"]:
            bounds = [f"{c['interval'][0]:.3g}–{c['interval'][1]:.3g}" if c["interval"] else "—"] if level else []
            table.add_row(c["id"], c["formula"], f"{c['mean']:.3f}", f"{c['std']:.3f}",
                          f"{c['relative_std']:.2f}", *bounds, *([c["extrapolation"]] if notes else []))
        Console().print(table)
    return 0 if counts["predicted"] else 1


def predict_progress(inputs, every_s: float):
    from paraisite.predict import count_inputs
    from paraisite.progress import RateProgress

    return RateProgress(count_inputs(inputs), every_s)


def bundle(args) -> int:
    import json

    from paraisite.models.bundle import RouteModels, parse_stoichiometry, read_bundle, write_bundle
    from paraisite.models.phonon_bte import bte_potential, reads_bte
    from paraisite.predict import find_models, load_ensemble, property_of
    from paraisite.prior import one_potential

    try:
        card = json.loads(open(args.card).read()) if args.card else {}
    except (OSError, ValueError) as exc:
        raise ParaisiteError(f"--card {args.card}: {exc}") from None
    if not args.runs and not args.extend:
        raise ParaisiteError("give the runs of every structure no route takes (or --extend a bundle that has them)")
    routed = [(name, parse_stoichiometry(stoichiometry), [run]) for name, stoichiometry, run in args.route or []]
    rest = [("other" if routed or args.extend else "all", None, args.runs)] if args.runs else []
    calibration = cv_rows(args.interval_cv)  # read once for every route
    if args.bte and not calibration:
        raise ParaisiteError("--bte fits each route's prior on its recipe's cv runs: give them with --interval-cv")
    potential, physical = one_potential(args.bte) if args.bte else (None, None)
    routes = [RouteModels(name, amounts, models, interval_for(f"route {name}", models, calibration, args.level),
                          prior_for(f"route {name}", models, calibration, physical, potential, args.level))
              for name, amounts, runs in [*routed, *rest] for models in [tuple(find_models(runs))]]
    bte_routes = []
    for name, *runs in args.bte_route or []:
        if not runs:
            raise ParaisiteError(f"--bte-route {name}: give the route's run folders after its name")
        bte_routes.append((name, tuple(find_models(runs))))
    bte_models = [str(path) for _, models in bte_routes for path in models]
    # every member loads, and all predict one property
    members = load_ensemble([*args.runs, *(run for _, _, (run,) in routed), *bte_models], data_dir=args.data_dir)
    not_bte = [m.path for m in members if m.path in bte_models and not reads_bte(m.featurizer)]
    if not_bte:
        raise ParaisiteError(f"--bte-route: {', '.join(not_bte)} do not take the BTE κ as input (train them with "
                             "backbone=megnet_bte or m3gnet_bte)")
    potential_of = {m.path: bte_potential(m.featurizer) for m in members if m.path in bte_models}
    routes += [RouteModels(name, None, models, interval_for(f"route {name}", models, calibration, args.level),
                           bte_potentials=tuple(dict.fromkeys(potential_of[str(path)] for path in models)))
               for name, models in bte_routes]
    kept = {property_of(m.config) for m in read_bundle(args.extend)[0]} if args.extend else set()
    if members and kept and kept != {members[0].property}:
        raise ParaisiteError(f"--extend {args.extend}: its members predict {sorted(kept)}, the runs "
                             f"{members[0].property}")
    if args.keep and not args.extend:
        raise ParaisiteError("--keep picks routes of the bundle given with --extend")
    by_composition = members[0].featurizer.by_composition if members else False  # no new route: not read
    manifest, written = write_bundle(routes, args.output, card, by_composition, args.data_dir, precision=args.precision,
                                     extend=args.extend, keep=kept_spec(args.keep))
    for route in written:
        print(f"route {route.name} ({route.describe()}): {len(route.members)} member(s); training domain "
              f"{len(route.domain.elements)} elements, cells up to {route.domain.max_atoms or '—'} atoms")
        if route.interval:
            interval = route.interval
            print(f"  {interval.level:.0%} interval: ×/÷ {math.exp(interval.ln_halfwidth):.2f}, calibrated on "
                  f"{interval.calibrated_on}")
        if route.prior:
            prior = route.prior
            width = f"; {prior.interval.level:.0%} interval ×/÷ {math.exp(prior.interval.ln_halfwidth):.2f}" \
                if prior.interval else ""
            print(f"  BTE prior: weight {prior.weight:.2f}, shift {prior.shift:+.2f}, centre {prior.centre:+.2f} on "
                  f"{prior.n_calibration} materials; MAPE {prior.mape_model:.3f} → {prior.mape_blended:.3f} out of "
                  f"fold{width}")
    print(f"→ {manifest.parent} (model.json, weights.safetensors, {args.precision})")
    return 0


def kept_spec(specs: list[str] | None) -> dict[str, int | None] | None:
    """--keep ROUTE[:N]... as {route: N (None: all its members)}; None: keep every route."""
    if not specs:
        return None
    out = {}
    for spec in specs:
        name, _, n = spec.partition(":")
        if n and not n.isdigit():
            raise ParaisiteError(f"--keep {spec}: give ROUTE or ROUTE:N (N the number of its first members kept)")
        out[name] = int(n) if n else None
    return out


def cv_rows(folders: list | None) -> list[dict] | None:
    """The report rows of the cv runs that intervals are calibrated on (None: no --interval-cv)."""
    from paraisite.report import find_runs, summarize

    return summarize(find_runs(folders), n_boot=1) if folders else None


def interval_for(what: str, models: tuple, rows: list[dict] | None, level: float):
    """The interval of `models` (`what`: their name in messages; one recipe, or a committee of recipes:
    `recipe_configs`) calibrated on their out-of-fold ensemble from the cv rows among `rows` (`cv_rows`; None: not
    asked)."""
    from paraisite.intervals import calibrate_for

    if not rows or not models:
        return None
    return calibrate_for(recipe_configs(what, models), rows, level)


MIN_PRIOR_MATERIALS = 10


def prior_for(what: str, models: tuple, rows: list[dict] | None, physical: dict | None, potential: str | None,
              level: float):
    """The BTE prior of `models` fitted on their recipe's cv row among `rows` (its out-of-fold ensemble) and the
    BTE κ of its materials (`physical`: `prior.physical_kappa` of the `potential`; None: not asked)."""
    import numpy as np

    from paraisite.intervals import out_of_fold_ensemble
    from paraisite.prior import calibrate_prior, kappa_of

    if not physical or not models:
        return None
    described, own = out_of_fold_ensemble(recipe_configs(what, models), rows)
    kappa = kappa_of(physical, own.ids)
    if np.isfinite(kappa).sum() < MIN_PRIOR_MATERIALS:
        raise ParaisiteError(f"--bte: {what}: {np.isfinite(kappa).sum()} of the {len(own.ids)} materials of "
                             f"{described} have a trusted κ in the tables; a prior is fitted on at least "
                             f"{MIN_PRIOR_MATERIALS}")
    return calibrate_prior(own.pred, kappa, own.true, level, described, potential)


def recipe_configs(what: str, models: tuple) -> list[dict]:
    """The recorded config of each recipe among `models` (seeds and folds apart): one, or several for a committee,
    which must hold as many models of each (their mean is then the mean of the recipes' ensembles)."""
    from collections import Counter

    from paraisite.report import config_settings, recipe_of, recorded_config

    configs = [recorded_config(path.parent) for path in models]
    if None in configs:
        raise ParaisiteError(f"--interval-cv: {models[configs.index(None)].parent} records no config (run_key.json "
                             "or .hydra/config.yaml) to find its recipe's cv row by")
    recipes = [repr(sorted(recipe_of(config_settings(c)).items())) for c in configs]
    counts = Counter(recipes)
    if len(set(counts.values())) > 1:
        raise ParaisiteError(f"--interval-cv: {what} hold {' and '.join(map(str, counts.values()))} models of "
                             f"{len(counts)} recipes; a committee holds as many of each (its mean is the mean of "
                             "their ensembles, as its interval is calibrated)")
    return [configs[recipes.index(recipe)] for recipe in counts]


def bte(args) -> int:
    shard, shards = parse_shard(args.shard)
    threads = max(1, (os.cpu_count() or 1) // shards)  # shards side by side: no core oversubscribed (OpenMP: phono3py,
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # read when its runtime starts: before torch is imported)
    import torch

    from paraisite.models.sevennet import sevennet_calculator, unusable
    from paraisite.phonons import DEFAULT_POTENTIAL, IMAGINARY_MODES, BTESettings, fill_table, kappa_table, read_table

    torch.set_num_threads(threads)
    records, flagged = bte_inputs(args.data, args.data_dir)
    if args.unstable_in:
        unstable = {i for table in args.unstable_in for i, row in read_table(Path(table)).items()
                    if row.flag == IMAGINARY_MODES}
        records = [r for r in records if r.id in unstable]
    records = sorted(records, key=lambda r: len(r.structure) if r.structure is not None else 0)  # cheap cells first
    records = [r for i, r in enumerate(records) if i % shards == shard]
    potential = args.potential or DEFAULT_POTENTIAL
    calculator = sevennet_calculator(potential, device_of(args.device))
    flagged = {r.id: flagged.get(r.id) or unusable(r, set(calculator.type_map)) for r in records}
    settings = BTESettings(mesh=args.mesh, min_length=args.min_length, temperature=args.temperature,
                           cutoff_pair_distance=args.cutoff_pair_distance or None, renormalise=args.renormalise)

    def shown(result) -> None:
        kappa = f"{result.kappa:.3g} W/mK" if result.kappa == result.kappa else "—"
        print(f"{result.id} {result.formula}: {kappa} {result.flag} ({result.displacements} supercells, "
              f"{result.seconds:.0f} s)", flush=True)

    if args.fill:
        if not Path(args.output).is_file():
            raise ParaisiteError(f"--fill {args.fill}: no table {args.output} to fill")
        usable = [r for r in records if not flagged[r.id]]
        table = fill_table(usable, calculator, Path(args.output), args.fill, settings,
                           lambda row: print(f"{row.id} {row.formula}: {args.fill} {getattr(row, args.fill):.4f}",
                                             flush=True), potential)
        known = sum(math.isfinite(getattr(row, args.fill)) for row in table.values())
        print(f"{known} of {len(table)} rows with {args.fill} → {args.output}")
        return 0
    table = kappa_table(records, calculator, Path(args.output), settings, flagged, shown, potential)
    print(f"{sum(table[r.id].kappa == table[r.id].kappa for r in records)} of {len(records)} with κ by {potential} → "
          f"{args.output}")
    return 0


def bte_inputs(data: str, data_dir: str | None):
    """The records of a named data set, or of structure files/folders (no targets), and {id: parse error}."""
    from paraisite.data.datasets import LTC_DATASETS, MIRROR_FILES, source_path, sources_of
    from paraisite.data.records import Record, read_records
    from paraisite.predict import parse, read_inputs

    if data in LTC_DATASETS or data in MIRROR_FILES:
        return [r for s in sources_of(data) for r in read_records(source_path(s, data_dir))], {}
    parsed = [parse(item) for item in read_inputs([data])]
    records = [rec or Record(rid, "", None, None) for rid, rec, _ in parsed]
    return records, {rid: flag for rid, _, flag in parsed if flag}


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" → (K − 1, N): the K-th of N interleaved parts of the records."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise ParaisiteError(f"--shard {text!r}: give K/N with 1 ≤ K ≤ N, e.g. 1/2")
    return k - 1, n


def status(args) -> int:
    from paraisite.status import show

    return show(args.runs, args.watch, args.stale_after)


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give a number ≥ 1 (or leave the option out)")
    return value


def device_of(choice: str | None) -> str:
    """A `--device` given, else cuda when available, else cpu."""
    import torch

    return choice or ("cuda" if torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> int:
    from paraisite.phonons import FILLABLE, BTESettings

    parser = argparse.ArgumentParser(prog="paraisite", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="the data folder").add_subparsers(dest="action", required=True)
    check = data.add_parser("check", help="verify every file against SHA256SUMS")
    check.add_argument("--data-dir", default=None)
    check.set_defaults(func=data_check)
    fetch = data.add_parser("fetch", help="rebuild the data files from upstream (needs internet)")
    fetch.add_argument("--dest", default="data-fetched", help="destination folder")
    fetch.add_argument("--only", default=None, help="comma-separated: agl, paraisite, weights (default: all)")
    fetch.add_argument("--paraisite-repo", default=None,
                       help="raw-file base URL of the ParAIsite repository, branch included (default: the upstream main)")
    fetch.set_defaults(func=data_fetch)
    rep = commands.add_parser(
        "report", help="gather runs' results.json into the paper's table and plots",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rows: one per configuration, mean (std) over seeds.\nprotocol=cv rows: the metric of each "
                    "repeat's pooled out-of-fold predictions, mean over repeats\n[95 % bootstrap interval over "
                    "materials] (folds×complete repeats); under the table, the ensemble of its repeats\nout of fold (per "
                    "material, the mean of the seeds' fold models that never saw it).",
        epilog='example:\n  paraisite report outputs/cv --output r --compare "megnet/eform/agl_dft/dataset1" '
               '"megnet/eform/dft/dataset1"')
    rep.add_argument("runs", nargs="+", help="run or sweep folders (searched recursively)")
    rep.add_argument("--output", required=True, help="folder for table.csv, table.md, row_configs.md, heatmap.png, "
                                                     "curves.png (comparisons.md/.csv, committees.md/.csv, "
                                                     "selections.md)")
    rep.add_argument("--metric", default="mape", choices=["mape", "mae", "log_mae", "log_rmse", "rmse", "r2", "spearman"])
    rep.add_argument("--compare", nargs=2, action="append", metavar=("ROW_A", "ROW_B"),
                     help="paired difference A − B of the metric on the same (seed, test set, material) predictions, "
                          "with a 95 %% bootstrap interval and a permutation p-value (repeatable). A row is named by "
                          "its label, backbone/pretrain/finetune/data as on the heatmap (e.g. "
                          "megnet/eform/agl_dft/dataset1; cv rows end in [cv], variants in (key=value, …)), "
                          "or by any part of it that names one row (an exact label wins)")
    rep.add_argument("--committee", nargs="+", action="append", metavar="ROW",
                     help="score the ensemble of two or more rows (e.g. other backbones on one data set: per "
                          "material, the mean of the rows' own out-of-fold ensembles) with its interval, paired with "
                          "each row alone (repeatable; rows named as for --compare). --compare names a committee "
                          "by its label, 'committee: A + B …', or its start")
    rep.add_argument("--experts", nargs="+", action="append", metavar="ROW",
                     help="add a row of per-source experts: rows trained on disjoint sets (e.g. Dataset1 and Dataset2), "
                          "each material predicted out of fold by the row of its own set — on MIX, to pair with the "
                          "row trained on the union (repeatable; rows named as for --compare; --compare and "
                          "--committee may name the new row)")
    rep.add_argument("--select", nargs="+", action="append", metavar="ROW",
                     help="add the row chosen on validation among two or more cv rows trained on one set: in each "
                          "repeat and fold, the candidate whose fold run validates best predicts the fold's test "
                          "materials — the honest score of picking a recipe, which the best row's own score flatters "
                          "(repeatable; rows named as for --compare; --compare, --committee and --experts may name "
                          "the new row)")
    rep.set_defaults(func=report)
    pred = commands.add_parser("predict", help="predict κ (or the runs' property) of structures or formulas with an ensemble of runs")
    pred.add_argument("inputs", nargs="+", help="CIF, POSCAR/CONTCAR, pymatgen JSON, .json(.gz) record lists, folders; "
                                                 "a .csv with a formula column (composition models)")
    pred.add_argument("--run", action="append", help="run or sweep folder (repeatable)")
    pred.add_argument("--model", action="append",
                      help="a model bundle: a folder written by `paraisite bundle`, or the name of one shipped with "
                           "the package (kappa: the ready κ model, docs/models.md); repeatable, combines with --run")
    pred.add_argument("--row", default=None, help="only the finished runs of this row of `paraisite report` under "
                                                  "the --run folders — its label or any part of it that names one "
                                                  "row, e.g. 'dataset1 [cv]': the k fold models × repeats of a cv "
                                                  "grid point")
    pred.add_argument("--interval-cv", nargs="+", action="extend", default=None, metavar="FOLDER",
                      help="cv runs of the --run models' recipe: write a prediction interval calibrated on its "
                           "out-of-fold predictions (as `paraisite bundle --interval-cv`)")
    pred.add_argument("--level", type=float, default=0.9, help="the interval's level (default 0.9)")
    pred.add_argument("--bte", nargs="+", action="extend", default=None, metavar="TABLE",
                      help="`paraisite bte` tables of (some of) the inputs (rows matched by id, file name or "
                           "stem): where a structure has a trusted BTE κ, κ is its route's blend of the models' mean "
                           "with it (a bundle with a BTE prior, e.g. kappa; models of backbone=megnet_bte or "
                           "m3gnet_bte take it as input, each model its own potential's rows; README \"κ by the "
                           "phonon BTE\"); adds kappa_ensemble, kappa_bte, bte_note")
    pred.add_argument("--output", required=True, help="predictions: .csv, or .parquet")
    pred.add_argument("--top", type=positive_int, default=0, help="print the K (≥ 1) lowest-prediction candidates")
    pred.add_argument("--below", type=float, default=float("inf"), help="only candidates whose mean is below this")
    pred.add_argument("--batch-size", type=positive_int, default=None, help="structures per inference batch (default 32)")
    pred.add_argument("--chunk-size", type=int, default=512, help="structures read and written at a time")
    pred.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    pred.add_argument("--workers", type=int, default=None,
                      help="processes that parse and build graphs (default: 0 on CPU, up to 8 with a GPU)")
    pred.add_argument("--data-dir", default=None)
    pred.add_argument("--progress-every", type=float, default=10.0, metavar="S",
                      help="a progress line on stderr at most every S seconds (default 10)")
    pred.add_argument("--quiet", action="store_true", help="no progress lines")
    pred.set_defaults(func=predict)
    bun = commands.add_parser("bundle", help="an ensemble of finished runs as one portable model folder (safetensors "
                                             "+ JSON) for `paraisite predict --model DIR`")
    bun.add_argument("runs", nargs="*", help="run or sweep folders (every model.pt under them is a member); with "
                                              "--route, the members of every structure no route takes")
    bun.add_argument("--route", nargs=3, action="append", metavar=("NAME", "STOICHIOMETRY", "RUNS"),
                     help="the models under RUNS predict the compounds of this stoichiometry, e.g. --route binaries 1:1 "
                          "outputs/final_dataset1 (repeatable; the output gets a route column)")
    bun.add_argument("--bte-route", nargs="+", action="append", default=None, metavar="NAME RUNS",
                     help="models that take the phonon-BTE κ as input (backbone=megnet_bte, m3gnet_bte): they predict "
                          "the structures that `predict --bte` gives a BTE row, of the kinds (stoichiometry, space "
                          "group) their training data hold (unused without --bte; repeatable, one route per kind); "
                          "several folders: e.g. the experts of two potentials' tables, a committee whose mean is "
                          "each structure's mean over its members (give as many of each recipe)")
    bun.add_argument("--extend", default=None, metavar="BUNDLE",
                     help="keep this bundle's members and routes (a folder or a shipped name), add the new routes "
                          "and update its card; e.g. --extend kappa --bte-route bte RUNS --output DIR")
    bun.add_argument("--keep", nargs="+", default=None, metavar="ROUTE[:N]",
                     help="with --extend: keep only these of its routes, ROUTE:N with its first N members "
                          "(e.g. --keep other binaries:3 half-heuslers:3)")
    bun.add_argument("--precision", default="float32", metavar="{float32,float16,int8}",
                     help="how the weights are stored: float32; float16 (half the size, predictions within ~1e-3 "
                          "relative); int8 matrices with a scale per block of 32 weights (about a quarter, within "
                          "~1e-2)")
    bun.add_argument("--interval-cv", nargs="+", action="extend", default=None, metavar="FOLDER",
                     help="cv runs of the members' recipes: each route gets a prediction interval calibrated on the "
                          "out-of-fold predictions of its recipe (split conformal on log ratios; `predict` writes "
                          "<name>_lo<level> and _hi<level>)")
    bun.add_argument("--level", type=float, default=0.9, help="the intervals' level (default 0.9)")
    bun.add_argument("--bte", nargs="+", action="extend", default=None, metavar="TABLE",
                     help="`paraisite bte` tables of the cv runs' materials: each route gets a BTE prior fitted on "
                          "its recipe's out-of-fold predictions (with --interval-cv; `predict --bte` applies it)")
    bun.add_argument("--output", required=True, type=Path, help="the bundle folder")
    bun.add_argument("--card", default=None, help="a JSON file of model-card facts stored with the bundle (card)")
    bun.add_argument("--data-dir", default=None)
    bun.set_defaults(func=bundle)
    phon = commands.add_parser(
        "bte", help="κ from SevenNet-0's forces by the phonon Boltzmann equation (phono3py, RTA): no κ data "
                    "needed; resumable CSV (`predict --model kappa --bte CSV` blends it with the model)")
    phon.add_argument("data", help="a data set (dataset1, dataset2, agl, …) or structures: a file or folder as for "
                                   "predict")
    phon.add_argument("--output", required=True, help="the CSV: one row per structure as it finishes; rerun to "
                                                       "resume (ids already in it are skipped)")
    phon.add_argument("--mesh", type=positive_int, default=BTESettings.mesh,
                      help="q-point mesh per direction (default %(default)s)")
    phon.add_argument("--min-length", type=float, default=BTESettings.min_length,
                      help="supercell: the conventional cell repeated to at least this many Å per edge (default "
                           "%(default)s)")
    phon.add_argument("--cutoff-pair-distance", type=float, default=BTESettings.cutoff_pair_distance,
                      help="third-order displacement pairs only within this many Å (default %(default)s; 0: all)")
    phon.add_argument("--temperature", type=float, default=BTESettings.temperature, help="K (default %(default)s)")
    phon.add_argument("--renormalise", type=positive_int, default=0, metavar="ITERATIONS",
                      help="a structure with imaginary modes at 0 K gets self-consistent harmonic phonons at the "
                           "temperature, from this many iterations of thermally displaced supercells (the tables "
                           "here: 6; without it: none; README \"κ by the phonon BTE\")")
    phon.add_argument("--unstable-in", nargs="+", default=None, metavar="TABLE",
                      help="only the structures that these tables flag imaginary_modes (e.g. to rerun them with "
                           "--renormalise into a table that `backbone.physics.tables` lists after them)")
    phon.add_argument("--potential", default=None,
                      help="the SevenNet potential whose forces are used: 7net-0 (default), 7net-l3i5 (about three "
                           "times the time) or 7net-mf-0-r2scan (SevenNet-MF-0 at its r2SCAN fidelity); each row "
                           "records it, one potential per table (a table written before the column takes the "
                           "potential it is resumed with)")
    phon.add_argument("--device", choices=("cpu", "cuda"), default=None,
                      help="where the potential's forces are computed (default: cuda when available; the phonon "
                           "and BTE steps run on the CPU either way)")
    phon.add_argument("--fill", choices=FILLABLE, default=None, metavar="COLUMN",
                      help="no κ: give the rows of --output that lack the column (a table written before it existed) "
                           "theirs: volume_ratio by relaxing their structure alone (seconds each), anharmonicity "
                           "(σᴬ) by the relaxation, harmonic force constants and thermal samples (under a minute "
                           "each; give the table's --renormalise); resumable")
    phon.add_argument("--shard", default="1/1", help="K/N: only every N-th structure from the K-th (parallel runs, "
                                                      "each with its own --output and 1/N of the cores); smaller "
                                                      "cells run first")
    phon.add_argument("--data-dir", default=None)
    phon.set_defaults(func=bte)
    stat = commands.add_parser("status", help="where the runs of a sweep (or single runs) stand: finished, running, "
                                              "interrupted, failed, not started; metrics; best so far (read-only)")
    stat.add_argument("runs", nargs="+", help="run or sweep folders (searched recursively)")
    stat.add_argument("--watch", type=float, default=0, metavar="N", help="refresh every N seconds (Ctrl-C stops)")
    stat.add_argument("--stale-after", type=float, default=600, metavar="S",
                      help="a run with no file written for S seconds is interrupted, not running (default 600)")
    stat.set_defaults(func=status)
    args = parser.parse_args(argv)
    from paraisite.task import quiet_third_party

    quiet_third_party()
    try:
        return args.func(args)
    except ParaisiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
