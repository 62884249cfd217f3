"""Prediction and screening with an ensemble of trained runs.

Inputs stream in chunks (flat memory however many structures): each chunk is featurized once per distinct
featurizer, every member predicts in batches under `torch.inference_mode`, and rows are written as they come.
A bad structure never stops the batch: it gets a `flag` and an empty prediction.
"""

from __future__ import annotations

import gzip
import heapq
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from paraisite.data.records import (
    STRUCTURE_PREFIXES,
    STRUCTURE_SUFFIXES,
    BadRecord,
    Record,
    is_structure_file,
    parse_formula,
    read_csv_rows,
    row_structure,
    structure_from_file,
)
from paraisite.errors import ParaisiteError
from paraisite.intervals import Interval
from paraisite.models.bundle import Domain, Route, read_bundle, route_for, rows_wanting
from paraisite.models.io import read_model_file
from paraisite.models.phonon_bte import add_rows, bte_potential
from paraisite.prior import Prior, row_of
from paraisite.recipe import build_model

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
INPUT_LISTS = (".json.gz", ".jsonl", ".jsonl.gz")
# structures per inference batch: M3GNet's triplet tensors outgrow the CPU caches beyond ~32 (batch 128: +35 % time);
# MEGNet is within 3 % from 32 to 128 (docs/benchmarks.md)
PREDICT_BATCH = 32
TEXT_COLUMNS = ("id", "formula", "route", "bte_note", "flag", "extrapolation")  # of the output; n_atoms an integer,
# the rest floats


@dataclass
class Member:
    name: str
    module: torch.nn.Module
    featurizer: object
    property: tuple = ()  # what it predicts (see `property_of`); members of one ensemble must agree
    path: str = ""
    domain: Domain | None = None  # a bundle's training domain (inputs beyond it are noted)
    route: Route | None = None  # of a bundle with routes: it predicts only the structures its route takes
    interval: Interval | None = None  # of a bundle calibrated for it: the interval around the ensemble's mean
    prior: Prior | None = None  # of a bundle route with a BTE prior (`predict(..., physical=…)` applies it)


def property_of(config: dict) -> tuple[str, str, str]:
    """(kind, name, unit) of the property a run predicts, from its config's `data` section. Every κ run predicts
    the same property (κ in W/mK), whatever set it trained on; any other target is named by its data set."""
    data = config.get("data") or {}
    kind = data.get("target") or "kappa"
    unit = data.get("unit") or ("W/mK" if kind == "kappa" else "")
    return kind, "kappa" if kind == "kappa" else str(data.get("name") or data.get("dataset")), unit


def load_member(path: Path, name: str, device: str = "cpu", data_dir: str | None = None) -> Member:
    """Rebuild a run's final model from its `model.pt` (tensors and plain data only: weights_only=True)."""
    return member_of(*read_model_file(path), name, str(path), device, data_dir)


def member_of(config: dict, state: dict, name: str, path: str, device: str = "cpu",
              data_dir: str | None = None) -> Member:
    """A model from its stored config and weights: the architecture from the backbone `spec` (no data folder
    needed), then the weights and the calibration factor."""
    cfg = OmegaConf.create(config)
    if data_dir is not None and "data_dir" in cfg.backbone:
        cfg.backbone.data_dir = data_dir
    module = build_model(cfg, weights=None)
    try:
        module.load_state_dict(state)
    except ParaisiteError as exc:  # e.g. a feature regressor holding types safe loading refuses
        raise ParaisiteError(f"{path}: {exc}") from None
    module.output_scale = float(config.get("output_scale", 1.0))  # files written before calibration: none
    module.eval().to(device)
    return Member(name, module, module.backbone.featurizer(), property_of(config), path)


def find_models(runs: list[str | Path]) -> list[Path]:
    paths = []
    for run in map(Path, runs):
        if not run.exists():
            raise ParaisiteError(f"--run {run}: no such run folder or model file")
        found = [run] if run.is_file() else sorted(run.rglob(MODEL_FILE))
        if not found:
            raise ParaisiteError(f"{run}: no {MODEL_FILE} (a finished run) in this folder")
        paths += found
    return paths


def load_ensemble(runs: list[str | Path], device: str = "cpu", data_dir: str | None = None,
                  bundles: list[str | Path] = ()) -> list[Member]:
    """The members of every run under `runs` and of every model bundle (a folder, or a shipped name: `kappa`). A
    bundle with routes predicts alone."""
    members, names = [], set()
    for bundle in bundles:
        bundled, _, routes = read_bundle(bundle)
        if len(routes) > 1 and (runs or len(bundles) > 1):
            raise ParaisiteError(f"--model {bundle} routes structures to its members ({', '.join(r.name for r in routes)})"
                                 ": it predicts alone; give it without other --model or --run")
        route_of = {name: r for r in routes for name in r.members}
        for m in bundled:
            member = member_of(m.config, m.state_dict, m.name, f"{bundle}:{m.name}", device, data_dir)
            route = route_of[m.name]
            members.append(replace(member, domain=route.domain, route=route if len(routes) > 1 else None,
                                   interval=route.interval, prior=route.prior))
            names.add(m.name)
    for path in find_models(runs):
        name = path.parent.name if path.parent.name not in names else f"{path.parent.name}_{len(names)}"
        names.add(name)
        members.append(load_member(path, name, device, data_dir))
    check_same_property(members)
    return members


def check_same_property(members: list[Member]) -> None:
    """An ensemble averages its members: they must predict the same property in the same unit."""
    groups: dict[tuple, list[str]] = {}
    for m in members:
        groups.setdefault(m.property, []).append(m.path)
    if len(groups) > 1:
        listed = "; ".join(f"{name} ({unit or 'no unit'}): {', '.join(paths)}" for (_, name, unit), paths in groups.items())
        raise ParaisiteError(f"the runs predict different properties, which cannot be averaged: {listed}; "
                             "predict them with separate --run sets")


@dataclass
class RawItem:
    """One input structure before parsing: a structure file, or a record (dict or JSON line) of a list file."""

    id: str
    file: str
    row: dict | str | None = None
    flag: str = ""


def read_inputs(paths: list[str | Path]) -> Iterator[RawItem]:
    """Every structure in files/folders (recursive): CIF, POSCAR/CONTCAR, pymatgen JSON, record lists (`.json(.gz)`
    lists of {"id", "structure"}), JSON lines (`.jsonl(.gz)`, one record per line, read as a stream); and formulas:
    a `.csv` with a `formula` column (optional `id`) given by name, for composition models."""
    for root in map(Path, paths):
        if root.is_dir():
            files = sorted(f for f in root.rglob("*") if is_structure_file(f) or f.name.endswith(INPUT_LISTS))
        elif root.exists():
            files = [root]
        else:
            yield RawItem(str(root), str(root), flag="parse_error: no such file")
            continue
        for file in files:
            yield from _read_file(file)


def _read_file(file: Path) -> Iterator[RawItem]:
    opener = gzip.open if file.suffix == ".gz" else open
    if file.suffix == ".csv":
        try:
            rows = read_csv_rows(file)
        except BadRecord as exc:
            yield RawItem(str(file), str(file), flag=f"parse_error: {exc}")
            return
        if rows and "formula" not in rows[0]:
            yield RawItem(str(file), str(file), flag=f"parse_error: no 'formula' column (found {sorted(rows[0])})")
            return
        for i, row in enumerate(rows):
            yield RawItem(row.get("id") or f"{file}:{i + 2}", str(file), {"formula": row["formula"]})
    elif file.name.endswith((".jsonl", ".jsonl.gz")):
        with opener(file, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    yield RawItem(f"{file}:{i}", str(file), line)
    elif file.name.endswith((".json", ".json.gz")):
        try:
            with opener(file, "rt", encoding="utf-8") as f:
                obj = json.load(f)
        except (OSError, ValueError, EOFError) as exc:
            yield RawItem(str(file), str(file), flag=f"parse_error: {type(exc).__name__}: {exc}")
            return
        rows = obj if isinstance(obj, list) else [{"id": str(file), "structure": obj}]
        for i, row in enumerate(rows):
            rid = str(row.get("id", f"{file}:{i}")) if isinstance(row, dict) else f"{file}:{i}"
            yield RawItem(rid, str(file), row)
    else:
        yield RawItem(str(file), str(file))


def parse(item: RawItem) -> tuple[str, Record | None, str]:
    """(id, record or None, flag) of one raw item."""
    if item.flag:
        return item.id, None, item.flag
    rid = item.id
    try:
        if item.row is None:
            structure = structure_from_file(Path(item.file))
        else:
            row = json.loads(item.row) if isinstance(item.row, str) else item.row
            rid = str(row.get("id", rid)) if isinstance(row, dict) else rid
            if isinstance(row, dict) and "formula" in row and "structure" not in row:
                return rid, Record(rid, parse_formula(row["formula"]), None), ""
            structure = row_structure(row)
    except BadRecord as exc:
        return rid, None, f"parse_error: {exc}"
    except ValueError as exc:  # a JSON line that is not JSON
        return rid, None, f"parse_error: {type(exc).__name__}: {exc}"
    return rid, Record(rid, structure.composition.reduced_formula, None, structure), ""


def chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def featurizers_of(members: list[Member]) -> dict[str, object]:
    """Distinct featurizers of the ensemble (members with the same graph settings share their graphs)."""
    return {repr(m.featurizer): m.featurizer for m in members}


def featurize(records: list[Record], featurizers: dict[str, object]) -> dict[str, object]:
    return {key: f.build(records) for key, f in featurizers.items()}


def prepare_chunk(items: list[RawItem], featurizers: dict[str, object], routes: tuple[Route, ...] = (),
                  physical: dict | None = None) -> tuple[list[tuple], dict[str, object]]:
    """Parse and featurize a chunk (in a worker process when asked): ([(id, formula, n_atoms, flag, route, wanting)],
    features of the parsed records, in order; route: the name of the route that takes the record, "" without routes;
    a BTE route takes only records with a row in `physical` (`prior.bte_tables`' form) of each potential its members
    read, `Route.bte_potentials`; wanting: the rows a BTE route of the record's kind lacks, `rows_wanting`). Only
    tensors and strings travel back, never structures."""
    parsed = [parse(item) for item in items]
    records = [rec for _, rec, _ in parsed if rec is not None]

    def bte_rows(rid: str) -> frozenset[str]:
        return frozenset(p for p, rows in (physical or {}).items() if row_of(rows, rid) is not None)

    meta = []
    for rid, rec, flag in parsed:
        route = wanting = ""
        if rec and routes:
            given = bte_rows(rid)
            route = route_for(routes, rec.formula, rec.structure, given).name
            wanting = rows_wanting(routes, rec.formula, rec.structure, given)
        meta.append((rid, rec.formula if rec else None, len(rec.structure) if rec and rec.structure else None, flag,
                     route, wanting))
    return meta, featurize(records, featurizers) if records else {}


@torch.inference_mode()
def infer(members: list[Member], features: dict[str, object], n: int, batch_size: int = PREDICT_BATCH,
          takes: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """(prediction per record × member, NaN where unusable or not asked; flag per record) from featurized records.
    `takes` (records × members, bool): which members predict which records (None: all of them)."""
    predictions = np.full((n, len(members)), np.nan)
    flags = [""] * n
    takes = np.ones((n, len(members)), dtype=bool) if takes is None else takes
    for key, data in features.items():
        for i, flag in enumerate(data.flags):
            flags[i] = flags[i] or flag
        groups: dict[tuple, list[int]] = {}  # the records a group of members predicts → those members
        for j, m in enumerate(members):
            if repr(m.featurizer) == key:
                groups.setdefault(tuple(int(i) for i in np.flatnonzero(takes[:, j])), []).append(j)
        for records, member_ids in groups.items():
            usable = [i for i in records if not data.flags[i]]
            for start in range(0, len(usable), batch_size):
                idx = usable[start:start + batch_size]
                batch = data.collate(idx)
                for j in member_ids:
                    module = members[j].module
                    on_device = module.transfer_batch_to_device(batch, module.device, 0)
                    predictions[idx, j] = module.predict_target(on_device).double().cpu().numpy()
    return predictions, flags


def predict_records(members: list[Member], records: list[Record],
                    batch_size: int = PREDICT_BATCH) -> tuple[np.ndarray, list[str]]:
    """(prediction per record × member, NaN where unusable; flag per record)."""
    return infer(members, featurize(records, featurizers_of(members)), len(records), batch_size)


def _worker_init() -> None:
    import warnings

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module=r"pymatgen\.")


def prepared_chunks(items: Iterator[RawItem], featurizers: dict, chunk_size: int, workers: int,
                    routes: tuple[Route, ...] = (), physical: dict | None = None) -> Iterator:
    """prepare_chunk over the input, in order; with workers, at most 2 chunks per worker are in flight."""
    work = partial(prepare_chunk, featurizers=featurizers, routes=routes, physical=physical)
    if workers <= 0:
        yield from map(work, chunks(items, chunk_size))
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init) as pool:
        pending: deque = deque()
        for chunk in chunks(items, chunk_size):
            pending.append(pool.submit(work, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_from_folders(path: Path) -> bool:
    """Whether a folder input reads a file of this name (the name-only test of `read_inputs`)."""
    return (path.suffix.lower() in STRUCTURE_SUFFIXES or path.name.startswith(STRUCTURE_PREFIXES)
            or path.suffix == ".json" or path.name.endswith(INPUT_LISTS))


def check_output(inputs: list[str | Path], output: str | Path) -> None:
    """Refuse an output that is one of the inputs (it would be emptied before it is read), or that a folder input
    would read as a structure file."""
    out = Path(output).resolve()
    for given in map(Path, inputs):
        source = given.resolve()
        same = source == out or (given.exists() and out.exists() and out.samefile(given))
        if same or (given.is_dir() and out.is_relative_to(source) and read_from_folders(out)):
            what = "is the input" if same else f"would be read as an input of the folder {given}"
            raise ParaisiteError(f"--output {output} {what}; write the predictions to another file")


class RowWriter:
    """CSV, or Parquet when the file name ends in `.parquet`; rows are appended chunk by chunk to a temporary file
    beside `path`, renamed to `path` by `close()` (a crash, or `abort()`, leaves any earlier file untouched)."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.parquet = path.suffix == ".parquet"
        self.writer = None
        if not self.parquet:
            import csv

            self.file = open(self.tmp, "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow(columns)

    def write(self, rows: list[list]) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # a fixed schema: a chunk whose rows are all flagged (empty predictions) must not change a column's type
            schema = pa.schema([(c, pa.string() if c in TEXT_COLUMNS else pa.int64() if c == "n_atoms" else pa.float64())
                                for c in self.columns])
            table = pa.table({c: [r[k] for r in rows] for k, c in enumerate(self.columns)}, schema=schema)
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.tmp, schema)
            self.writer.write_table(table)
        else:
            self.writer.writerows([["" if v is None else v for v in r] for r in rows])

    def _close_file(self) -> None:
        if self.writer is not None:
            if self.parquet:
                self.writer.close()
            else:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
            self.writer = None

    def close(self) -> None:
        """Finish the file and put it in place (atomically)."""
        wrote = self.writer is not None
        self._close_file()
        if wrote:
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop what was written; `path` keeps what it held before."""
        try:
            self._close_file()
        finally:
            self.tmp.unlink(missing_ok=True)


def output_name(members: list[Member]) -> str:
    """Column stem of the predictions: `kappa` for κ models, `prediction` for any other property."""
    kinds = {m.module.target.kind for m in members}
    if len(kinds) > 1:
        raise ParaisiteError("the runs predict different kinds of property (κ and another); predict them apart")
    return "kappa" if kinds == {"kappa"} else "prediction"


def prior_note(rid: str, formula: str, priors: set, physical: dict,
               read: frozenset[str] = frozenset()) -> tuple[float | None, bool, str]:
    """(a row's trusted BTE κ or None, whether to blend the prediction with it, why not) for one predicted row:
    `priors` those of the members that predicted it, `physical` the BTE rows by potential (`prior.bte_tables`,
    `by_file_name`), `read` the potentials whose rows some of them took as input (then the κ shown is the first of
    those rows, in the tables' order); a prior reads its own potential's row. A table row of another formula is
    refused."""
    found = {potential: row for potential, rows in physical.items() if (row := row_of(rows, rid)) is not None}
    for row in found.values():
        if parse_formula(row.formula) != parse_formula(formula):
            raise ParaisiteError(f"--bte: {rid}: the BTE table holds {row.formula} under this id, the input is "
                                 f"{formula} (a table of other structures?)")
    if read:
        row = next((row for potential, row in found.items() if potential in read), None)
        if row is None:
            return None, False, "not in the BTE tables"
        return row.kappa, False, f"the models' input{f' ({row.why})' if row.why else ''}, no BTE prior"
    prior = next(iter(priors)) if len(priors) == 1 else None
    row = found.get(prior.potential) if prior is not None else next(iter(found.values()), None)
    if row is None:
        return None, False, "not in the BTE tables" + (f" of {prior.potential}" if found else "")
    if row.kappa is None:
        return None, False, row.why
    if prior is None:
        return row.kappa, False, "its models have no BTE prior"
    return row.kappa, True, ""


def bte_routes_of(members: list[Member]) -> set[Route]:
    """The BTE routes of a bundle's members (`Route.needs_bte`)."""
    return {m.route for m in members if m.route is not None and m.route.needs_bte}


def by_file_name(rows: dict) -> dict:
    """`rows` ({id: row}) also under each id's file name where no other id shares it: a structure file's table row
    is found whatever path the file was given by."""
    from collections import Counter

    names = Counter(Path(k).name for k in rows)
    return {**{Path(k).name: v for k, v in rows.items() if names[Path(k).name] == 1}, **rows}


def predict(inputs: list[str | Path], members: list[Member], output: str | Path, chunk_size: int = 512,
            batch_size: int = PREDICT_BATCH, top: int = 0, below: float = float("inf"), workers: int = 0,
            progress=None, physical: dict | None = None) -> dict:
    """Predict every input structure (or formula) with the ensemble; write rows to `output`. Returns counts and the
    top list (lowest predictions). `workers` > 0 parses and featurizes in that many processes while the main one
    runs inference; `progress(n)` is called with the number of items done after each chunk. Columns: id, formula,
    n_atoms, <name>_mean (κ) or prediction, its std, with calibrated members the interval (`<name>_lo<level>`,
    `_hi<level>`: empty where the members that predict a row do not share one), one per member, with routes the
    route that took the structure (only its members predict it), flag, extrapolation (inputs beyond the training
    domain, members predicting far outside their training range; the prediction is kept). With `physical`
    (`prior.bte_tables`: the BTE rows of the inputs, by potential and id), a bundle's BTE routes (`Route.bte_kinds`;
    unused without `physical`) predict the structures of their kinds that have a row of every potential their
    members read (each member reads its own potential's), and elsewhere the mean of a structure with a trusted BTE
    κ (of the prior's potential) is the blend of its route's `Prior` (and the interval the prior's); then also
    <name>_ensemble (the members' mean), <name>_bte (the row's trusted κ) and bte_note (why not blended). The output
    is written to a temporary file renamed at the end; an output that is one of the inputs is refused."""
    check_output(inputs, output)
    name = output_name(members)
    mean_column = "kappa_mean" if name == "kappa" else "prediction"
    bte_routes = bte_routes_of(members)
    if physical is None:  # they take structures given a BTE row: none without `--bte`
        members = [m for m in members if m.route not in bte_routes]
    routes = tuple(dict.fromkeys(m.route for m in members if m.route is not None))
    as_input = set()
    if physical is not None:
        physical = {potential: by_file_name(rows) for potential, rows in physical.items()}
        as_input = {j for j, m in enumerate(members) if add_rows(m.featurizer, physical)}
        if not as_input and not any(m.prior for m in members):
            raise ParaisiteError("--bte: none of the models has a BTE prior (a bundle written by `paraisite bundle "
                                 "--bte`; shipped: kappa) or takes the BTE κ as input (backbone=megnet_bte, "
                                 "m3gnet_bte)")
    intervals = [m.interval for m in members] + ([m.prior.interval for m in members if m.prior]
                                                 if physical is not None else [])
    levels = sorted({round(100 * i.level) for i in intervals if i})
    if len(levels) > 1:
        raise ParaisiteError(f"the models' intervals have different levels ({', '.join(map(str, levels))} %); predict "
                             "them apart")
    bounds = [f"{name}_lo{levels[0]}", f"{name}_hi{levels[0]}"] if levels else []
    blended = [f"{name}_ensemble", f"{name}_bte", "bte_note"] if physical is not None else []
    columns = ["id", "formula", "n_atoms", mean_column, f"{name}_std", *bounds, *blended,
               *(f"{name}_{m.name}" for m in members), *(["route"] if routes else []), "flag", "extrapolation"]
    reach = np.array([m.module.transform.reach() for m in members])  # (members, 2): low, high
    writer = RowWriter(Path(output), columns)
    counts = {"predicted": 0, "flagged": 0, "extrapolated": 0, "blended": 0}
    best: list[tuple] = []
    try:
        prepared = prepared_chunks(read_inputs(inputs), featurizers_of(members), chunk_size, workers, routes,
                                   physical if bte_routes else None)  # the rows only route to them
        for meta, features in prepared:
            parsed = [k for k, (_, _, _, flag, _, _) in enumerate(meta) if not flag]
            takes = np.array([[m.route is None or m.route.name == meta[k][4] for m in members] for k in parsed],
                             dtype=bool).reshape(len(parsed), len(members))
            predictions, flags = infer(members, features, len(parsed), batch_size, takes)
            position = {k: g for g, k in enumerate(parsed)}
            rows = []
            for k, (rid, formula, n_atoms, flag, route, wanting) in enumerate(meta):
                values, mean, std, note, interval = [None] * len(members), None, None, "", [None] * len(bounds)
                prior_columns = [None, None, ""] if blended else []
                if k in position:
                    flag = flags[position[k]]
                    if not flag:
                        row, asked = predictions[position[k]], np.flatnonzero(takes[position[k]])
                        values = [float(row[j]) if j in asked else None for j in range(len(members))]
                        mean = float(np.mean(row[asked]))
                        std = float(np.std(row[asked], ddof=1)) if len(asked) > 1 else 0.0
                        calibrated = {members[j].interval for j in asked}
                        if bounds and len(calibrated) == 1 and None not in calibrated:  # one calibration for all
                            interval = list(calibrated.pop().bounds(mean))
                        if blended:
                            priors = {members[j].prior for j in asked}
                            read = frozenset(bte_potential(members[j].featurizer) for j in as_input & set(asked))
                            kappa, blend, why = prior_note(rid, formula, priors, physical, read)
                            prior_columns = [mean, kappa, "; ".join(filter(None, (why, wanting)))]
                            if blend:
                                counts["blended"] += 1
                                prior = priors.pop()
                                mean = float(prior.blend(mean, kappa))
                                interval = list(prior.interval.bounds(mean)) if bounds and prior.interval else \
                                    [None] * len(bounds)
                        domains = dict.fromkeys(members[j].domain for j in asked if members[j].domain is not None)
                        far = [j for j in asked if not reach[j, 0] <= row[j] <= reach[j, 1]]
                        note = "; ".join([*filter(None, (d.outside(formula, n_atoms) for d in domains)),
                                          *(f"{members[j].name}: {name} {members[j].module.transform.extrapolation(row[j])}"
                                            for j in far)])
                counts["flagged" if mean is None else "predicted"] += 1
                counts["extrapolated"] += bool(note)
                rows.append([rid, formula, n_atoms, mean, std, *interval, *prior_columns, *values,
                             *([route] if routes else []), flag, note])
                if mean is not None and mean < below and top:
                    item = (-mean, rid, formula, mean, std, note, tuple(interval))
                    (heapq.heappush if len(best) < top else heapq.heappushpop)(best, item)
            writer.write(rows)
            if progress is not None:
                progress(len(rows))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    counts["column"], counts["interval_level"] = name, levels[0] if levels else None
    counts["models"], counts["routes"] = len(members), [r.name for r in routes]  # those used (a BTE route: with --bte)
    counts["top"] = [{"id": i, "formula": f, "mean": m, "std": s, "relative_std": s / m if m else float("nan"),
                      "extrapolation": e, "interval": b if b and None not in b else None}
                     for _, i, f, m, s, e, b in sorted(best, reverse=True)]
    return counts


def count_inputs(paths) -> int | None:
    """Structures in `paths` when cheap to know: structure files, folders of them, `.jsonl` (lines), `.csv`
    (rows), single-structure `.json`. None when any input is a record list (`.json(.gz)` list, `.jsonl.gz`),
    which only parsing would count."""
    total = 0
    for root in map(Path, paths):
        if root.is_dir():
            files = [f for f in root.rglob("*") if is_structure_file(f) or f.name.endswith(INPUT_LISTS)]
        else:
            files = [root]
        for file in files:
            n = _count_file(file)
            if n is None:
                return None
            total += n
    return total


def _count_file(file: Path) -> int | None:
    name = file.name
    try:
        if name.endswith(".gz"):
            return None
        if name.endswith(".jsonl"):
            with open(file, "rb") as f:
                return sum(1 for line in f if line.strip())
        if file.suffix == ".csv":
            with open(file, "rb") as f:
                return max(sum(1 for line in f if line.strip()) - 1, 0)
        if file.suffix == ".json":
            with open(file, "rb") as f:
                head = f.read(4096).lstrip()
            return None if head.startswith(b"[") else 1
    except OSError:
        return 1  # flagged as one unreadable item
    return 1
