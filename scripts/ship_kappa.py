"""Build the shipped κ model: bundle the final runs of the chosen recipe into `paraisite/bundles/kappa/` with its
model card, and write the card's page `docs/models.md`. The bundle routes by stoichiometry and space group: 1:1
compounds of Dataset1's space groups to the recipe trained on Dataset1 (binaries), 1:1:1 compounds of Dataset2's to
the recipe trained on Dataset2 (half-Heuslers), every other structure to the recipe trained on MIX (both) — the
per-source experts of docs/benchmarks.md.

    python scripts/ship_kappa.py outputs/kappa_final/mix --route binaries 1:1 outputs/kappa_final/dataset1 \\
        --route half-heuslers 1:1:1 outputs/kappa_final/dataset2 --cv outputs/aglcosine_cv/cut outputs/routed_cv/megnet_s34 \\
        --bte docs/results/bte/dataset1_sevennet.csv docs/results/bte/dataset2_sevennet.csv

The positional folder and each `--route`'s: the members (`protocol=final`, one per seed); `--cv`: the
cross-validation sweeps of the same recipe on Dataset1, Dataset2 and MIX, whose pooled out-of-fold metrics (95 %
intervals) are the card's expected error and whose out-of-fold ensembles calibrate each route's 90 % prediction
interval (`paraisite bundle --interval-cv`); `--bte`: the `paraisite bte` tables of their materials, on which each
route's BTE prior is fitted (`paraisite bundle --bte`) and scored out of fold.

The BTE routes (members that read the phonon-BTE κ as input; each predicts the structures `predict --bte` gives a
row, of the kinds its training set holds): `--bte-route NAME RUNS...` a route's members (trained on one set; the
runs of several recipes, as many of each: a committee, e.g. experts reading two potentials' BTE tables), `--bte-cv`
the cv sweeps of their recipes (each route's: its members' backbone, pre-training and chain, trained on its set),
whose out-of-fold ensembles give each route's expected error and calibrate its interval. Without the positional
folder the shipped bundle keeps its routes (`--keep`: only those named, ROUTE:N with its first N members) and card,
and gets the BTE routes (the shipped build: docs/benchmarks.md, "A committee of two potentials' BTE experts for the
binaries"):

    python scripts/ship_kappa.py --keep other binaries:5 half-heuslers:5 \\
        --bte-route binaries-bte outputs/bte_loss_route/final_dataset1/{0,1,2,3}-* \\
            outputs/committee_route/final_dataset1_r2scan/{0,1,2,3}-* \\
        --bte-route half-heuslers-bte outputs/electrons_route/final_dataset2 \\
        --bte-cv outputs/electrons_cv/m3gnet_bte_amorphous outputs/electrons_cv/m3gnet_bte_electrons \\
            outputs/r2scan_committee_cv/m3gnet_bte_r2scan
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from omegaconf import OmegaConf  # noqa: E402

from paraisite.cli import kept_spec  # noqa: E402
from paraisite.intervals import coverage_out_of_fold  # noqa: E402
from paraisite.models.bundle import SHIPPED, read_bundle  # noqa: E402
from paraisite.models.io import read_model_file  # noqa: E402
from paraisite.prior import blended_out_of_fold, kappa_of, physical_kappa  # noqa: E402
from paraisite.recipe import stages_of  # noqa: E402
from paraisite.report import compare_rows, experts, find_row, find_runs, repeats_of, summarize  # noqa: E402
from paraisite.stats import Repeat, bootstrap, ensemble, rng_for  # noqa: E402
from paraisite.stats import paired as paired_difference  # noqa: E402

METRICS = ("mape", "mae", "log_mae", "spearman")
TESTS = ("dataset1", "dataset2", "mix")
LEVEL = 0.9  # of the routes' prediction intervals


def scores(row: dict) -> dict:
    return {t: {k: row[f"{t}_{k}"] for k in ("mean", "lo", "hi")} for t in TESTS if row.get(f"{t}_n")}


def bootstrapped(repeat: Repeat, metric: str, *key) -> dict:
    """{mean, lo, hi}: `metric` of one repeat (an ensemble) and its 95 % bootstrap interval over materials."""
    b = bootstrap([repeat], metric, "kappa", rng_for(*key))
    return {"mean": b["estimate"], "lo": b["lo"], "hi": b["hi"]}


def on_mix(parts: list[Repeat]) -> Repeat:
    """MIX as its parts' materials (Dataset1's and Dataset2's), each predicted as in its part."""
    return Repeat("mix", *(np.concatenate([getattr(part, f) for part in parts]) for f in ("ids", "true", "pred")))


def prior_check(ensembles: dict[str, Repeat], tables: list[Path]) -> dict:
    """{"routed": {test set: {model, blended: {mean, lo, hi}, diff: {diff, ci_lo, ci_hi, p}, covered, n}},
    "interval_check": {data set: `coverage_out_of_fold`}}: each route's recipe out of fold (`ensembles`: data set →
    its out-of-fold ensemble) against the same with its BTE prior, each fold's prior fitted on the other folds
    (`prior.blended_out_of_fold`), on MIX the routed model, each material blended by its own set's route; and how
    an interval calibrated on the blends, as the route's prior interval is, covers the materials it did not see."""
    physical = physical_kappa(tables)
    pairs, coverage = {}, {}
    for data, e in ensembles.items():
        kappa = kappa_of(physical, e.ids)
        blended = blended_out_of_fold(e.pred, kappa, e.true)
        covered = np.isfinite(kappa)
        coverage[data] = coverage_out_of_fold(e.true[covered], blended[covered], LEVEL)
        if data != "mix":
            pairs[data] = (e, Repeat(e.seed, e.ids, e.true, blended))
    pairs["mix"] = tuple(on_mix([pairs[d][k] for d in ("dataset1", "dataset2")]) for k in (0, 1))
    out = {}
    for test, (model, blended) in pairs.items():
        scores = {}
        for name, repeat in (("model", model), ("blended", blended)):
            scores[name] = bootstrapped(repeat, "mape", "ship-prior", name, test)
        d = paired_difference([blended], [model], "mape", "kappa", rng_for("ship-prior-diff", test))
        scores["diff"] = {"diff": d["diff"], "ci_lo": d["lo"], "ci_hi": d["hi"], "p": d["p"]}
        scores["covered"], scores["n"] = int(np.isfinite(kappa_of(physical, model.ids)).sum()), len(model.ids)
        out[test] = scores
    return {"routed": out, "interval_check": coverage}


def cv_metrics(cv: list[Path], row_of: dict[str, str], tables: list[Path] | None = None) -> dict:
    """{metric: {"routed" | data set: {test set: {mean, lo, hi}}}}: each route's recipe on its own set (`row_of`:
    data set → row label) and the routed model (the per-source experts of Dataset1 and Dataset2) on MIX and its
    parts; "routed_minus_mix": {test set: {diff, lo, hi, p}}, the routed model against the MIX row paired on the same
    materials; "interval_check": {data set: how the recipe's interval, calibrated as `paraisite bundle --interval-cv`
    does, covers materials it was not calibrated on}; "prior_check": with BTE `tables`, `prior_check`; plus the
    shape (folds × repeats)."""
    runs = find_runs(cv)
    out: dict = {}
    for metric in METRICS:
        rows = summarize(runs, metric)
        by_data = {data: find_row(rows, name) for data, name in row_of.items()}
        routed = experts(rows, [row_of["dataset1"], row_of["dataset2"]], metric)
        out[metric] = {"routed": scores(routed), **{data: scores(row) for data, row in by_data.items()}}
        if metric == "mape":
            out["routed_minus_mix"] = {c["test_set"]: {k: c[k] for k in ("diff", "ci_lo", "ci_hi", "p")}
                                   for c in compare_rows(routed, by_data["mix"], metric) if c["test_set"] in TESTS}
            ensembles = {data: repeats_of(row, as_ensemble=True)["committee"][data] for data, row in by_data.items()}
            out["interval_check"] = {data: coverage_out_of_fold(e.true, e.pred, LEVEL) for data, e in ensembles.items()}
            if tables:
                out["prior_check"] = prior_check(ensembles, tables)
        out["folds"], out["repeats"] = routed["folds"], len(routed["_repeats"])
    return out


def recipe(model_file: Path) -> list[dict]:
    """The typed stages a member trained with (keys added to the code since then take their current defaults)."""
    config = OmegaConf.create(read_model_file(model_file)[0])
    config.stage_defaults = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "train.yaml").stage_defaults,
                                            config.stage_defaults)
    keys = ("name", "data", "epochs", "batch_size", "loss", "lr", "decay_steps", "final_lr_fraction", "policy")
    return [{k: getattr(s, k) for k in keys} for s in stages_of(config)]


def route_card(name: str, stoichiometry: str | None, *members: Path) -> dict:
    """A route's facts from its members' folders (several: a committee of recipes, seeds in folder order)."""
    ok = [r for folder in members for r in (json.loads(p.read_text()) for p in sorted(folder.rglob("results.json")))
          if r.get("status") == "ok"]
    first = ok[0]
    return {"name": name, "stoichiometry": stoichiometry, "data": first["stages"][-1]["data"],
            "seeds": [r["config"]["seed"] for r in ok],
            "stages": [{k: s.get(k) for k in ("name", "data", "epochs", "best_epoch", "n_train", "n_val")}
                       for s in first["stages"]],
            "versions": first["versions"]}


def cv_row(members: Path) -> str:
    """The cv row of the members' recipe on the set they trained on (`report.label`'s form)."""
    config = json.loads(next(members.rglob("results.json")).read_text())["config"]
    return "/".join(str(config[k]) for k in ("backbone", "pretrain", "finetune", "data")) + " [cv]"


def bte_route_cards(routes: list[tuple[str, list[Path]]], cv: list[Path]) -> tuple[list[dict], dict]:
    """The BTE routes' facts, and those of them together (the per-source experts: each material by its own set's
    route; {} for one route): each route's members and recipe, and its recipe's cv row (`cv_row`) on the set it
    trained on, as single models and as the out-of-fold ensemble of the repeats (what the route is), with the
    interval check of that ensemble. A route of several folders is a committee of their recipes (`rows`): per
    material the mean of their out-of-fold ensembles, as `paraisite bundle` calibrates it; no single-model score."""
    runs = find_runs(cv)
    summaries = {metric: summarize(runs, metric) for metric in METRICS}  # read once for every route
    cards, own = [], {}
    for name, folders in routes:
        card = route_card(name, None, *folders)
        card.update(rows=list(dict.fromkeys(cv_row(folder) for folder in folders)),
                    recipe=recipe(next(folders[0].rglob("model.pt"))))
        card["row"], data = " + ".join(card["rows"]), card["data"]
        found = {metric: [find_row(summaries[metric], row) for row in card["rows"]] for metric in METRICS}
        ensembles = [repeats_of(f, as_ensemble=True)["committee"][data] for f in found["mape"]]
        own[name] = ensembles[0] if len(ensembles) == 1 else ensemble(ensembles)
        card["single"] = {metric: {data: scores(rows[0])[data] if len(rows) == 1 else None}
                          for metric, rows in found.items()}
        card["ensemble"] = {metric: {data: bootstrapped(own[name], metric, "ship-bte", name, metric, data)}
                            for metric in METRICS}
        card["folds"], card["repeats"] = found["mape"][0]["folds"], min(len(f["_repeats"]) for f in found["mape"])
        card["interval_check"] = coverage_out_of_fold(own[name].true, own[name].pred, LEVEL)
        cards.append(card)
    by_data = {card["data"]: own[card["name"]] for card in cards}
    if len(cards) < 2 or set(by_data) != {"dataset1", "dataset2"}:
        return cards, {}
    by_data["mix"] = on_mix([by_data["dataset1"], by_data["dataset2"]])
    return cards, {metric: {t: bootstrapped(by_data[t], metric, "ship-bte", "experts", metric, t) for t in TESTS}
                   for metric in METRICS}


def bte_routes(routes: list, card: dict) -> list[str]:
    """The page's section on the BTE routes (none without them)."""
    facts = {c["name"]: c for c in card.get("bte_routes", [])}
    written = [r for r in routes if r.needs_bte and r.name in facts]
    if not written:
        return []
    first, together = facts[written[0].name], card.get("bte_together", {})
    others = min(len(r.members) for r in routes if not r.needs_bte)
    prior = card["cv"].get("prior_check", {}).get("routed", {})

    def row(route) -> str:
        c = facts[route.name]
        width = f"{math.exp(route.interval.ln_halfwidth):.2f}" if route.interval else "—"
        single = c["single"]["mape"][c["data"]]
        recipes = len(c["rows"])
        seeds = ", ".join(map(str, dict.fromkeys(c["seeds"]))) + (f" of each of {recipes} recipes" if recipes > 1 else "")
        return (f"| {route.name} | {route.describe()} | {c['data']} | {len(route.members)} ({seeds}) | "
                f"{fmt(single) if single else '— (a committee)'} | "
                f"**{fmt(c['ensemble']['mape'][c['data']])}** | "
                + " | ".join(fmt(c["ensemble"][m][c["data"]]) for m in METRICS[1:])
                + f" | {width} | {c['interval_check']['coverage']:.2f} |")

    lines = [
        f"**With the phonon BTE as input: routes {', '.join(f'`{r.name}`' for r in written)}** (`--bte` only). "
        "Each takes the kinds of compound its training set holds, given a BTE row, instead of their own route and "
        "prior; every other structure keeps its route (and prior). Their members read the backbone's features "
        "joined by the row's ln κ_BTE (where trusted) and its flags (trusted, imaginary modes, no scattering) in the "
        "MLP head — the network weighs the physics per material, where the prior above has one weight per route; "
        "flagged rows are inputs too (a κ_BTE below 0.1 W/mK, the amorphous limit's order, reads as untrusted). "
        "Recipes: " + ", ".join(f"{r.name} " + " + ".join(f"`{row.removesuffix(' [cv]')}`"
                                                          for row in facts[r.name]["rows"]) for r in written)
        + ", each route trained on its own DFT set alone (`protocol=final`), "
        + "; ".join(f"{s['name']}: {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']:g}"
                    for s in first["recipe"])
        + (f"; {len(written[0].members)} members a route (fewer than the other routes' {others}: the bundle stays "
           "under its 20 MB)" if len(written[0].members) < others else "") + ".", "",
        f"Expected error: the recipe under {first['folds']}-fold cross-validation × {first['repeats']} repeats on "
        "seeds other than the members', out of fold on the set each route trained on (95 % bootstrap intervals over "
        "materials); the route is an ensemble, so its estimate is the ensemble's column. The recipe is M3GNet-BTE "
        "by domain, chosen on other folds and then tested on fresh ones as declared (`docs/benchmarks.md`, "
        "\"M3GNet-BTE by domain on folds not yet drawn\"; over seven sets of folds its 5-repeat ensembles read "
        "0.37–0.41 on Dataset1, 0.31–0.33 on Dataset2 and 0.34–0.36 on MIX, \"Where the goals stand\"), with the "
        "rows of "
        "the structures SevenNet-0 finds unstable at 0 K computed at 300 K (`paraisite bte --renormalise 6`), "
        "adopted by a rule declared before its test (\"Finite-temperature phonons for the structures unstable at "
        "0 K\": paired with the 0 K rows on 5 repeats, −0.003 / −0.001 / −0.002 on Dataset1 / Dataset2 / MIX, nil "
        "within the noise; ten repeats read 0.387 / 0.316 / 0.344), then with a κ_BTE below the amorphous limit not "
        "trusted, adopted by the same rule (\"A κ_BTE below the amorphous limit is not trusted\": +0.001 / −0.002 / "
        "−0.001, nil within the noise; the model no longer predicts κ = 0 from BaTe's 0.014 W/mK). The half-Heusler "
        "route's members also read the valence-electron count off a closed shell (8 or 18 a formula unit; the "
        "metallic half-Heuslers at other counts were over-predicted two- to five-fold), adopted by a stricter rule "
        "declared before its test (\"The valence-electron count of half-Heuslers as an input\": on Dataset2 −0.035 on "
        "fresh folds, −0.026 on the folds where it was found, −0.030 [−0.068, −0.001] over both, and −0.036 on a "
        "third fold set run after the decision; it changes nothing on Dataset1, where the count is 0 for every "
        "compound); it learnt the metals from four compounds (TiNiSb, ZrRuSb, TiIrSn, MnGaPt), so read its "
        "predictions for other metallic half-Heuslers as extrapolation. "
        + "".join(f"The route `{r.name}` is a committee of two experts of that recipe, one reading SevenNet-0's BTE "
                  "rows and one reading those of SevenNet-MF-0's r2SCAN head (whose relaxed lattices match the given "
                  f"cells), {len(r.members) // 2} members each (the bundle stays under its 20 MB): its prediction is "
                  "the mean of the two ensembles, adopted by a rule declared before its test (\"A committee of two "
                  "potentials' BTE experts for the binaries\": Dataset1 0.358 and 0.369 on two fresh fold sets against "
                  "0.408 and 0.403 for the SevenNet-0 expert alone, −0.042 [−0.087, +0.011] over both; a 10-repeat "
                  "ensemble of the one expert reads 0.399, so the gain is not the number of models; four members of "
                  "each read 0.362 and 0.372 on those fold sets, the mean over every choice of four repeats of each; "
                  "a third fresh fold set, run after shipping, reads 0.408 against 0.449: 0.378 on average over the "
                  "three). "
                  for r in written if len(facts[r.name]["rows"]) == 2)
        + "The table reads the routes' recipes on fresh folds (seeds 35–39), five repeats (a committee: the mean of "
        "its recipes' 5-repeat ensembles), the routes' members being others: one draw of the spread above.",
        "",
        "| route | takes | trained on | members (seeds) | MAPE, single models | **MAPE, ensemble of the repeats** | "
        f"MAE (W/mK), ensemble | log10 MAE, ensemble | Spearman ρ, ensemble | {LEVEL:.0%} interval ×/÷ | out-of-fold "
        "coverage |", "|---|---|---|---|---|---|---|---|---|---|---|",
        *(row(r) for r in written), ""]
    if together:
        lines += [
            "The routes together (each material by its own set's route, out of fold), beside the routed model with "
            "its prior (above; other folds, not paired):", "",
            "| test set | **MAPE, BTE routes** | MAE (W/mK) | log10 MAE | Spearman ρ | MAPE, routed model with its "
            "prior |", "|---|---|---|---|---|---|",
            *(f"| {t} | **{fmt(together['mape'][t])}** | " + " | ".join(fmt(together[m][t]) for m in METRICS[1:])
              + f" | {fmt(prior[t]['blended']) if t in prior else '—'} |" for t in together["mape"]), ""]
    return lines + [
        "Each route's interval is calibrated on its recipe's out-of-fold ensemble of its own set (the coverage "
        "column: each fifth calibrated on the other four). It needs each structure's row from `paraisite bte "
        "--renormalise 6`, as its training rows (about a minute per binary or half-Heusler on one core, a few more "
        "for one unstable at 0 K), and the binaries' committee a second row from `paraisite bte --renormalise 6 "
        "--potential 7net-mf-0-r2scan` (each member reads its own potential's rows); structures without the rows a "
        "route reads keep their other route.", "",
        "```bash", "paraisite bte shortlist/ --renormalise 6 --output bte.csv",
        "paraisite bte shortlist/ --renormalise 6 --potential 7net-mf-0-r2scan --output bte_r2scan.csv",
        "paraisite predict shortlist/ --model kappa --bte bte.csv bte_r2scan.csv --output refined.csv", "```", ""]


def card_of(routes: list[dict], members: Path, cv: dict, configuration: str) -> dict:
    return {"name": "kappa", "property": "lattice thermal conductivity κ (W m⁻¹ K⁻¹, 300 K)",
            "configuration": configuration, "recipe": recipe(next(members.rglob("model.pt"))),
            "routes": [{k: v for k, v in r.items() if k != "versions"} for r in routes], "cv": cv,
            "created": date.today().isoformat(), "versions": routes[-1]["versions"]}


def fmt(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def paired(d: dict) -> str:
    return f"{d['diff']:+.3f} [{d['ci_lo']:+.3f}, {d['ci_hi']:+.3f}]; {d['p']:.2g}"


def expected_error(cv: dict) -> list[str]:
    mape = cv["mape"]
    return [
        f"**Expected error** (the same recipe under {cv['folds']}-fold cross-validation × {cv['repeats']} repeats: "
        "pooled out-of-fold predictions of single models, mean over repeats, 95 % bootstrap interval over materials; "
        "`docs/benchmarks.md`). The routed model on MIX and its parts — each material predicted by the route its "
        "stoichiometry picks, whose fold models never saw it — against one model of the same recipe trained on MIX "
        "(the model shipped before routes):", "",
        "| test set | MAPE, routed | MAPE, one MIX model | routed − MIX model (paired; p) | MAE (W/mK), routed | "
        "log10 MAE, routed | Spearman ρ, routed |", "|---|---|---|---|---|---|---|",
        *(f"| {t} | {fmt(mape['routed'][t])} | {fmt(mape['mix'][t])} | {paired(cv['routed_minus_mix'][t])} | "
          + " | ".join(fmt(cv[m]["routed"][t]) for m in METRICS[1:]) + " |" for t in mape["routed"]), "",
        "The routes were chosen after the per-source experts were measured on these folds (every recipe measured "
        "erred less with them: `docs/benchmarks.md`, per-source experts); the numbers above are those same "
        "measurements, so read them as the estimate of a model chosen on them, not as a held-out test."]


def intervals(routes: list, cards: list[dict], cv: dict) -> list[str]:
    level = f"{routes[0].interval.level:.0%}"
    return [
        f"**Prediction intervals** (`kappa_lo{level[:-1]}`, `kappa_hi{level[:-1]}`): each route's {level} interval "
        "is split conformal on log ratios, κ ×/÷ a factor, calibrated on its recipe's out-of-fold ensemble "
        "predictions of its own set (`paraisite bundle --interval-cv`, README \"Model bundles\"). Checked on "
        "materials the calibration did not see (the set in 5 parts, each part's interval calibrated on the other "
        "four):", "",
        "| route | ×/÷ (90 %) | calibrated on | out-of-fold coverage | median hi/lo |", "|---|---|---|---|---|",
        *(f"| {r.name} | {math.exp(r.interval.ln_halfwidth):.2f} | {r.interval.calibrated_on} | "
          f"{cv['interval_check'][c['data']]['coverage']:.2f} | {cv['interval_check'][c['data']]['width']:.1f} |"
          for r, c in zip(routes, cards)), "",
        "For the binaries and the half-Heuslers the calibration materials are the route's own kind. The route "
        "`other` is calibrated on MIX (binaries and half-Heuslers predicted by the MIX-trained members), not on "
        "the compounds it takes: for them the interval is the width measured where the model was tested, a guess, "
        "with no coverage guarantee."]


def bte_prior(routes: list, cards: list[dict], cv: dict) -> list[str]:
    """The page's section on the routes' BTE priors (none without them)."""
    if "prior_check" not in cv:
        return []
    check, coverage = cv["prior_check"]["routed"], cv["prior_check"]["interval_check"]
    return [
        "**With the phonon BTE** (`--bte TABLE`, README \"κ by the phonon BTE\"): where a structure has a trusted κ "
        "from `paraisite bte` (SevenNet-0's force constants, phono3py, no κ label), its route blends the members' mean "
        "p with it: κ = exp(ln p + w·(ln κ_BTE + m − ln p) + a), m centring the physics on the model, (w, a) of least "
        "MAPE, all fitted on the route's recipe's out-of-fold predictions of the materials with a trusted BTE κ; the "
        "interval becomes the blend's. Screen with the model, run `paraisite bte` on the shortlist, predict it again "
        "with `--bte`:", "",
        "```bash", "paraisite bte shortlist/ --renormalise 6 --output bte.csv",
        "paraisite predict shortlist/ --model kappa --bte "
        "bte.csv --output refined.csv", "```", "",
        "| route | w | a | m | fitted on | its 90 % interval ×/÷ | out-of-fold coverage |", "|---|---|---|---|---|---|---|",
        *(f"| {r.name} | {r.prior.weight:.2f} | {r.prior.shift:+.2f} | {r.prior.centre:+.2f} | "
          f"{r.prior.n_calibration} materials | "
          f"{math.exp(r.prior.interval.ln_halfwidth) if r.prior.interval else float('nan'):.2f} | "
          f"{coverage[c['data']]['coverage']:.2f} |" for r, c in zip(routes, cards) if r.prior), "",
        "Out of fold (each fold's m, w, a fitted on the other folds; materials without a trusted BTE κ keep p), "
        "paired with the routed model on the same materials:", "",
        "| test set | with a BTE κ | MAPE, routed | MAPE, with the BTE prior | difference (paired; p) |",
        "|---|---|---|---|---|",
        *(f"| {t} | {c['covered']} of {c['n']} | {fmt(c['model'])} | {fmt(c['blended'])} | {paired(c['diff'])} |"
          for t, c in check.items()), "",
        "The BTE tables are `docs/results/bte/`; the blend's design was declared before these numbers "
        "(`docs/benchmarks.md`, \"The BTE prior in the shipped model\"). The route `other` (MIX-trained members) is "
        "fitted on binaries and half-Heuslers, not on the compounds it takes.", ""]


def members_cell(route: dict) -> str:
    """A route's members in the page: their number (of how many were trained, where fewer ship) and seeds."""
    trained = f" of the {route['trained']} trained" if route.get("trained") else ""
    return f"{len(route['seeds'])}{trained} ({', '.join(map(str, route['seeds']))})"


def page(card: dict, written: list, members: int) -> str:
    """docs/models.md from the card and the bundle's routes (`written`)."""
    cv = card["cv"]
    routes = [r for r in written if not r.needs_bte]  # those of card["routes"], in order
    in_bte = sum(len(r.members) for r in written if r.needs_bte)
    lines = [
        "# Models shipped with paraisite", "",
        "## `kappa`: lattice thermal conductivity from a crystal structure", "",
        "```bash", "paraisite predict my_structures/ --model kappa --output kappa.csv --top 20 --below 2", "```", "",
        f"**What**: {card['property']}; {members - in_bte} members in {len(routes)} routes"
        f"{f' (and {in_bte} in the BTE routes, used with `--bte`: below)' if in_bte else ''}, recipe "
        f"`{card['configuration']}` "
        "(MEGNet-Eform pre-trained on Materials Project formation energies → AGL (AFLOW, Debye-Callaway κ) → a DFT "
        "κ set, the paper's Step III), each member trained with `protocol=final` (all the data of its set; the "
        "validation slice picks the epoch), one per seed. **Routes**: a structure's reduced stoichiometry and its "
        "space group (spglib, tolerance 0.1 Å) pick the members that predict it: a route takes the compounds of "
        "its stoichiometry in the space groups its DFT set holds. The prediction is the mean (and sample std) over "
        "the route's members; the `route` column names the route:", "",
        "| route | takes | trained on (DFT set) | members (seeds) | its recipe's CV MAPE on its own set |",
        "|---|---|---|---|---|",
        *(f"| {r.name} | {r.describe()} | {c['data']} | {members_cell(c)} | "
          f"{fmt(cv['mape'][c['data']][c['data']])} |" for r, c in zip(routes, card["routes"])), "",
        "Stored as `paraisite/bundles/kappa/` (safetensors: weight matrices in int8 with a float32 scale per block of "
        "32 weights, vectors in float16; + JSON; loaded without unpickling, no data folder needed). On Dataset1 and "
        "Dataset2 its route means are within 1.1 % (BTE routes) and 3 % (the others; median 0.5 %) of the same "
        "members' in float32 (`bench/bundle_precision.py`, docs/benchmarks.md), well inside the error below.", "",
        "**Training data and recipe** (first member of each route):", "",
        "| route | stage | data | epochs | best epoch | train | val |", "|---|---|---|---|---|---|---|",
        *(f"| {r['name']} | {s['name']} | {s['data']} | {s['epochs']} | {s['best_epoch']} | {s['n_train']} | "
          f"{s['n_val']} |" for r in card["routes"] for s in r["stages"]), "",
        "Settings per stage (Adam, cosine decay of the lr to `final_lr_fraction` over `decay_steps`): "
        + "; ".join(f"{r['name']}: batch {r['batch_size']}, lr {r['lr']:g}, loss {r['loss']}, decay to "
                    f"{r['final_lr_fraction']:g} over {r['decay_steps']} steps, policy {r['policy']}"
                    for r in card["recipe"])
        + ". The published recipe trains 300 epochs per stage at batch 8; this is the CPU budget of the "
        "reproduction grid (`docs/benchmarks.md`).", "",
        *expected_error(cv), "",
        *intervals(routes, card["routes"], cv), "",
        *bte_prior(routes, card["routes"], cv),
        *bte_routes(written, card),
        "**Known limits**:",
        *(f"- Route {r.name}: the training data hold {len(r.domain.elements)} elements and cells of at most "
          f"{r.domain.max_atoms} atoms; a structure with another element or a larger cell is predicted but noted "
          "in the `extrapolation` column." for r in written),
        "- Routing reads the stoichiometry and the space group only: a 1:1 compound in the rocksalt, zincblende or "
        "wurtzite space group (225, 216, 186) is taken by the binaries' models whatever its chemistry (e.g. "
        "metallic transition-metal monoborides), and the space group is read from the given cell: a distorted or "
        "loosely relaxed cell may miss its route.",
        "- Every other structure gets the models trained on MIX, which pull high-κ predictions toward the "
        "half-Heusler range (out of fold on Dataset1's binaries, 4 repeats: slope of log predicted on log true κ "
        "0.52, bias −0.35 decades, `docs/benchmarks.md`); their error on chemistry unlike both sets is not measured.",
        "- Only the lattice (phonon) part: metals and semimetals get a lattice-like number with no electronic "
        "contribution; screen compounds, not elements.",
        "- Range: a member predicting beyond ×10 of its training κ range is noted (`extrapolation`); κ is floored at 0.",
        "- Materials far from the training chemistry (e.g. molecular crystals, strongly anharmonic or "
        "glass-like compounds) are extrapolations even within these limits; `kappa_std` (the members' spread) "
        "is far narrower than the error (it is not an interval), and the interval columns hold only for "
        "materials like the calibration set.",
        "- The DFT training sets are small (95 binaries, 143 half-Heuslers): the errors above are averages over "
        "that chemistry, not a guarantee for a new family.",
        f"\nBuilt {card['created']} with `python scripts/ship_kappa.py` (torch {card['versions']['torch']}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", type=Path, nargs="?", default=None,
                        help="the members of every structure no route takes (trained on MIX); absent: the shipped "
                             "bundle keeps its routes (--keep) and card, and gets the --bte-route routes")
    parser.add_argument("--route", nargs=3, action="append", default=[], metavar=("NAME", "STOICHIOMETRY", "RUNS"))
    parser.add_argument("--cv", type=Path, nargs="+", default=[], help="the cv sweeps of the same recipe")
    parser.add_argument("--row", default="megnet/eform/agl_dft/{data} [cv]", help="the cv rows' label ({data}: set)")
    parser.add_argument("--bte", type=Path, nargs="+", default=None, help="`paraisite bte` tables of the cv materials")
    parser.add_argument("--bte-route", nargs="+", action="append", default=[], metavar="NAME RUNS",
                        help="members that read the BTE κ as input, trained on one set (repeatable; several RUNS "
                             "folders: a committee of their recipes, as many members of each)")
    parser.add_argument("--bte-cv", type=Path, nargs="+", default=[], help="the cv sweeps of the BTE routes' recipes")
    parser.add_argument("--keep", nargs="+", default=None, metavar="ROUTE[:N]",
                        help="without the members: the shipped bundle's routes kept, ROUTE:N its first N members")
    parser.add_argument("--output", type=Path, default=SHIPPED / "kappa")
    args = parser.parse_args()
    if args.members is None and not args.bte_route:
        parser.error("give the members (a full build) or --bte-route (added to the shipped bundle)")
    if (args.members is not None and not args.cv) or (args.bte_route and not args.bte_cv):
        parser.error("the members need --cv, and --bte-route needs --bte-cv")
    if args.keep and args.members is not None:
        parser.error("--keep picks routes of the shipped bundle: give it without the members")
    if args.members is not None:
        routes = [route_card(name, stoichiometry, Path(runs)) for name, stoichiometry, runs in args.route]
        routes.append(route_card("other", None, args.members))
        cv = cv_metrics(args.cv, {t: args.row.format(data=t) for t in TESTS}, args.bte)
        card = card_of(routes, args.members, cv, args.row.format(data="<set>").removesuffix(" [cv]"))
        build = [str(args.members), *(a for name, stoichiometry, runs in args.route
                                      for a in ("--route", name, stoichiometry, runs)),
                 *(["--bte", *map(str, args.bte)] if args.bte else [])]
    else:
        card = read_bundle(args.output)[1]
        build = ["--extend", str(args.output), *(["--keep", *args.keep] if args.keep else [])]
        keep = kept_spec(args.keep) or {}
        for route in card["routes"]:
            n = keep.get(route["name"])
            if n is not None and n < len(route["seeds"]):
                route["trained"], route["seeds"] = route.get("trained", len(route["seeds"])), route["seeds"][:n]
    card["bte_route"] = None  # removes the single BTE route's facts of bundles before the routes by domain
    card["bte_routes"], card["bte_together"] = bte_route_cards(
        [(name, [Path(r) for r in runs]) for name, *runs in args.bte_route], args.bte_cv)
    build += [a for name, *runs in args.bte_route for a in ("--bte-route", name, *runs)]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(card, f)
        f.flush()
        subprocess.run([sys.executable, "-m", "paraisite.cli", "bundle", *build, "--precision", "int8",
                        "--interval-cv", *map(str, [*args.cv, *args.bte_cv]), "--level", str(LEVEL),
                        "--output", str(args.output), "--card", f.name], check=True, cwd=ROOT)
    members, card, written = read_bundle(args.output)
    (ROOT / "docs" / "models.md").write_text(page(card, written, len(members)))
    size = sum(p.stat().st_size for p in args.output.iterdir()) / 1e6
    print(f"{args.output}: {len(members)} members, {size:.1f} MB; docs/models.md written")


if __name__ == "__main__":
    main()
