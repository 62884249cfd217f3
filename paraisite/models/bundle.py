"""Model bundles: an ensemble of finished runs in one portable folder, no pickle anywhere.

`weights.safetensors` holds every member's tensors (keys `<member>/<parameter>`; float32, float16, or int8 matrices
with their float32 scales beside them at `<member>/<parameter>@scale`, as the bundle's `precision` says);
`model.json` holds the format, each member's name and config (with the backbone `spec`, so neither the data folder
nor the runs are needed), the routes and the model card's facts (`card`: training data, recipe,
metrics). A bundle's members may be split into `Route`s: the members of the route that takes a structure (by its
stoichiometry and space group) predict it, each route with its own training domain; a BTE route (members that read
the phonon-BTE κ as input; several, each for its own kinds) takes the structures of its training kinds that
`paraisite predict --bte` gives a BTE row. `paraisite bundle RUN... [--route NAME STOICH RUN]... [--bte-route NAME
RUN]... [--extend BUNDLE [--keep ROUTE[:N]...]] --output DIR` writes one; `paraisite predict ... --model DIR|NAME`
reads one, NAME being a bundle shipped inside the package (`paraisite/bundles/<NAME>/`, e.g. `kappa`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from paraisite.errors import ParaisiteError
from paraisite.files import write_atomic
from paraisite.intervals import Interval
from paraisite.models.io import read_model_file
from paraisite.phonons import DEFAULT_POTENTIAL
from paraisite.prior import Prior

BUNDLE_FORMAT = 3  # 3: int8 matrices (`@scale` keys); 2: routes; 1: one route of every member (all three read)
PRECISIONS = ("float32", "float16", "int8")
SCALE = "@scale"  # the key suffix of an int8 matrix's scales, one per block of BLOCK weights (or per row)
BLOCK = 32
SHIPPED = Path(__file__).resolve().parent.parent / "bundles"
WEIGHTS, MANIFEST = "weights.safetensors", "model.json"


@dataclass(frozen=True)
class Domain:
    """What a bundle's training data covered: its elements and its largest cell. Inputs beyond it are noted in the
    `extrapolation` column of `paraisite predict` (the prediction is kept)."""

    elements: frozenset[str]
    max_atoms: int | None  # None: composition data (no cells)

    def outside(self, formula: str | None, n_atoms: int | None) -> str:
        from pymatgen.core import Composition

        notes = []
        if formula:
            new = sorted({e.symbol for e in Composition(formula).elements} - self.elements)
            if new:
                notes.append(f"element(s) {', '.join(new)} not in the training data")
        if n_atoms and self.max_atoms and n_atoms > self.max_atoms:
            notes.append(f"{n_atoms} atoms > the largest training cell ({self.max_atoms})")
        return "; ".join(notes)

    def to_json(self) -> dict:
        return {"elements": sorted(self.elements), "max_atoms": self.max_atoms}


def training_domain(configs: list[dict], by_composition: bool, data_dir: str | None = None) -> Domain:
    """The domain of every data set the members' stages trained on (read from the data folder)."""
    from pymatgen.core import Composition

    from paraisite.data.datasets import source_path, sources_of
    from paraisite.data.records import read_records

    read = {(source, c["datamodule"]["limit"]) for c in configs for stage in c["finetune"]["stages"].values()
            for source in sources_of(stage["data"])}
    elements, sizes = set(), []
    for source, limit in sorted(read, key=str):
        for record in read_records(source_path(source, data_dir, by_composition), on_bad="skip", limit=limit):
            elements |= {e.symbol for e in Composition(record.formula).elements}
            if record.structure is not None:
                sizes.append(len(record.structure))
    return Domain(frozenset(elements), max(sizes) if sizes else None)


def stoichiometry_of(formula: str) -> tuple[float, ...]:
    """The reduced formula's element amounts, sorted: (1, 1) for NaCl, (1, 1, 1) for TiNiSn, (2, 3) for Bi2Te3."""
    from pymatgen.core import Composition

    return tuple(sorted(Composition(formula).reduced_composition.values()))


def parse_stoichiometry(text: str) -> tuple[int, ...]:
    """'1:1:1' → (1, 1, 1) (sorted); a clear error otherwise."""
    try:
        amounts = tuple(sorted(int(part) for part in text.split(":")))
    except ValueError:
        amounts = ()
    if len(amounts) < 1 or min(amounts) < 1:
        raise ParaisiteError(f"stoichiometry {text!r}: give whole element amounts ≥ 1 separated by ':' (e.g. 1:1 for "
                             "AB compounds, 1:1:1 for ABC)")
    return amounts


SYMPREC = 0.1  # Å: the tolerance of the space groups that routes read (loose: relaxed cells, rounded CIFs)


def space_group_of(structure) -> int | None:
    """The structure's space group number (None when spglib finds none)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_number()
    except ValueError:
        return None


@dataclass(frozen=True)
class Route:
    """Members that predict the compounds of one stoichiometry whose space group their training set holds
    (`space_groups`; None: any, e.g. composition models); the route without a stoichiometry takes the rest. A BTE
    route (`bte_kinds`: members that read the phonon-BTE κ as input) takes first, from any other route, the
    structures that `paraisite predict --bte` gives a BTE row and that are of a kind its training data hold (a
    stoichiometry in one of its space groups) and a row of each potential its members read (`bte_potentials`, e.g.
    a committee of two potentials' experts); it takes nothing without `--bte`. With an `interval`, its predictions
    come with that calibrated interval; with a `prior`, `paraisite predict --bte` blends them with the phonon-BTE κ
    of the structures that have one."""

    name: str
    stoichiometry: tuple[int, ...] | None
    space_groups: tuple[int, ...] | None
    members: tuple[str, ...]
    domain: Domain
    interval: Interval | None = None
    prior: Prior | None = None
    bte_kinds: tuple[tuple[tuple[int, ...], tuple[int, ...] | None], ...] = ()  # ((stoichiometry, space groups), …)
    bte_potentials: tuple[str, ...] = ()  # whose BTE rows its members read (`phonon_bte.bte_potential`)

    @property
    def needs_bte(self) -> bool:
        return bool(self.bte_kinds)

    def wanting(self, bte_rows: frozenset[str]) -> list[str]:
        """The potentials its members read whose rows a compound lacks (`bte_rows`: those it has)."""
        return [p for p in self.bte_potentials if p not in bte_rows]

    def takes(self, amounts: tuple[float, ...], structure) -> bool:
        """Whether it takes a compound of these sorted element amounts (`stoichiometry_of`) and structure (a BTE
        route: given a BTE row)."""
        kinds = self.bte_kinds or ((self.stoichiometry, self.space_groups),)
        return any(stoichiometry is not None and amounts == stoichiometry and (
            groups is None or (structure is not None and space_group_of(structure) in groups))
            for stoichiometry, groups in kinds)

    def describe(self) -> str:
        """What the route takes, in words."""
        if self.needs_bte:
            rows = "a BTE row" if len(self.bte_potentials) < 2 else f"BTE rows of {' and '.join(self.bte_potentials)}"
            return f"{' and '.join(kind(*k) for k in self.bte_kinds)} given {rows} (`predict --bte`)"
        if not self.stoichiometry:
            return "every structure no other route takes"
        return kind(self.stoichiometry, self.space_groups)

    def to_json(self) -> dict:
        return {"name": self.name, "stoichiometry": list(self.stoichiometry) if self.stoichiometry else None,
                "space_groups": list(self.space_groups) if self.space_groups else None,
                "members": list(self.members), "domain": self.domain.to_json(),
                "interval": self.interval.to_json() if self.interval else None,
                "prior": self.prior.to_json() if self.prior else None,
                "bte_kinds": [[list(s), list(g) if g else None] for s, g in self.bte_kinds],
                "bte_potentials": list(self.bte_potentials)}


def kind(stoichiometry: tuple[int, ...], space_groups: tuple[int, ...] | None) -> str:
    """A stoichiometry and its space groups in words: '1:1 compounds in space group(s) 186, 216'."""
    groups = f" in space group(s) {', '.join(map(str, space_groups))}" if space_groups else ""
    return f"{':'.join(map(str, stoichiometry))} compounds{groups}"


def route_for(routes: list[Route], formula: str, structure, bte_rows: frozenset[str] = frozenset()) -> Route:
    """The BTE route when the compound has a BTE row of each potential its members read (`bte_rows`: the potentials
    whose tables hold one) and the route takes it; else the first other route that takes it; else the route without
    a stoichiometry."""
    amounts = stoichiometry_of(formula)
    candidates = [r for r in routes if r.needs_bte and r.bte_potentials and not r.wanting(bte_rows)] + [
        r for r in routes if not r.needs_bte]
    return next((r for r in candidates if r.takes(amounts, structure)), None) or next(
        r for r in routes if r.stoichiometry is None and not r.needs_bte)


def rows_wanting(routes: list[Route], formula: str, structure, bte_rows: frozenset[str]) -> str:
    """Why a compound given BTE rows (`bte_rows`: their potentials) is not taken by a BTE route of its kind: the
    rows of the route's other potentials are missing ("" when none is)."""
    if not bte_rows:
        return ""
    amounts = stoichiometry_of(formula)
    return "; ".join(f"route {r.name} needs rows of {' and '.join(r.wanting(bte_rows))} too" for r in routes
                     if r.needs_bte and r.wanting(bte_rows) and r.takes(amounts, structure))


def last_stage_sources(configs: list[dict]) -> list[tuple[str, int | None]]:
    """(source, record limit) of every data source the members' last stages trained on."""
    from paraisite.data.datasets import sources_of

    return sorted({(source, c["datamodule"]["limit"]) for c in configs
                   for source in sources_of(list(c["finetune"]["stages"].values())[-1]["data"])}, key=str)


def training_kinds(configs: list[dict], by_composition: bool,
                   data_dir: str | None = None) -> dict[tuple[int, ...], tuple[int, ...] | None]:
    """{stoichiometry: its space groups (None for composition data)} of the compounds in the data sets the
    members' last stages trained on."""
    from paraisite.data.datasets import source_path
    from paraisite.data.records import read_records

    kinds: dict[tuple[int, ...], set] = {}
    for source, limit in last_stage_sources(configs):
        for record in read_records(source_path(source, data_dir, by_composition), on_bad="skip", limit=limit):
            amounts = stoichiometry_of(record.formula)
            if all(float(a).is_integer() for a in amounts):
                group = None if by_composition else space_group_of(record.structure)
                kinds.setdefault(tuple(int(a) for a in amounts), set()).add(group)
    return {s: None if by_composition else tuple(sorted(g - {None})) for s, g in sorted(kinds.items())}


def training_space_groups(configs: list[dict], stoichiometry: tuple[int, ...], by_composition: bool,
                          data_dir: str | None = None) -> tuple[int, ...] | None:
    """The space groups of the compounds of `stoichiometry` in the data sets the members' last stages trained on
    (None for composition data); a clear error when those sets hold no such compound."""
    kinds = training_kinds(configs, by_composition, data_dir)
    if stoichiometry not in kinds or kinds[stoichiometry] == ():
        sources = sorted({source for source, _ in last_stage_sources(configs)})
        raise ParaisiteError(f"stoichiometry {':'.join(map(str, stoichiometry))}: the route's training data "
                             f"({', '.join(sources)}) hold no such compound")
    return kinds[stoichiometry]


@dataclass(frozen=True)
class RouteModels:
    """What `write_bundle` puts in one route: the final models (`model.pt` files) of finished runs, and the interval
    and BTE prior calibrated for them (None: none); `bte_potentials`: those whose BTE rows the models read, for the
    BTE route (`Route`)."""

    name: str
    stoichiometry: tuple[int, ...] | None
    models: tuple[Path, ...]
    interval: Interval | None = None
    prior: Prior | None = None
    bte_potentials: tuple[str, ...] = ()

    @property
    def needs_bte(self) -> bool:
        return bool(self.bte_potentials)


@dataclass(frozen=True)
class BundleMember:
    name: str
    config: dict  # the run's stored config (model.pt's)
    state_dict: dict[str, torch.Tensor]


def bundle_folder(model: str | Path) -> Path:
    """A bundle folder given as a path, or by the name of a shipped bundle."""
    folder = Path(model)
    if (folder / MANIFEST).is_file():
        return folder
    shipped = SHIPPED / str(model)
    if (shipped / MANIFEST).is_file():
        return shipped
    names = sorted(p.parent.name for p in SHIPPED.glob(f"*/{MANIFEST}"))
    raise ParaisiteError(f"--model {model}: neither a bundle folder ({MANIFEST} + {WEIGHTS}) nor a shipped model "
                         f"({', '.join(names) or 'none shipped'})")


def shared_kind(a: Route, b: Route) -> tuple[tuple[int, ...], tuple[int, ...] | None] | None:
    """A kind of compound (stoichiometry, space groups) that both BTE routes take; None if none."""
    for stoichiometry, groups in a.bte_kinds:
        for other, other_groups in b.bte_kinds:
            if stoichiometry != other:
                continue
            if groups is None or other_groups is None:
                return stoichiometry, groups or other_groups
            if both := tuple(sorted(set(groups) & set(other_groups))):
                return stoichiometry, both
    return None


def check_routes(routes: list[Route] | list[RouteModels]) -> None:
    """A bundle's routes: exactly one without a stoichiometry (it takes what the others do not) besides the BTE
    routes, no two with one stoichiometry or one name, no two BTE routes that take one kind of compound (written
    routes: a stoichiometry in a space group both hold), one interval level."""
    if sum(r.stoichiometry is None and not r.needs_bte for r in routes) != 1:
        raise ParaisiteError("a bundle needs exactly one route without a stoichiometry (for every other structure)")
    bte = [r for r in routes if isinstance(r, Route) and r.needs_bte]  # written: their kinds are known
    for k, a in enumerate(bte):
        for b in bte[k + 1:]:
            if (shared := shared_kind(a, b)) is not None:
                raise ParaisiteError(f"BTE routes {a.name} and {b.name} both take {kind(*shared)}; give each kind of "
                                     "compound one BTE route")
    stoichiometries = [r.stoichiometry for r in routes if r.stoichiometry]
    if len(set(stoichiometries)) < len(stoichiometries):
        raise ParaisiteError(f"two routes share a stoichiometry ({stoichiometries})")
    names = [r.name for r in routes]
    if len(set(names)) < len(names):
        raise ParaisiteError(f"two routes share a name ({names})")
    levels = {r.interval.level for r in routes if r.interval}
    if len(levels) > 1:
        raise ParaisiteError(f"the routes' intervals have different levels ({', '.join(map(str, sorted(levels)))}); "
                             "give every route the same level")


def packed(key: str, value: torch.Tensor, precision: str) -> dict[str, torch.Tensor]:
    """A member's tensor as a bundle stores it: as it is in float32 (and any integer tensor); float16 ("float16",
    and the vectors of "int8"); a matrix in "int8" as int8 with a float32 scale (its largest |w| / 127) per block of
    `BLOCK` consecutive weights (per row where the size is no multiple of it) at `key + SCALE`: each weight within
    half a step of its block's scale."""
    if not value.is_floating_point() or precision == "float32":
        return {key: value}
    if precision == "int8" and value.dim() >= 2:
        blocks = value.numel() // BLOCK if value.numel() % BLOCK == 0 else value.shape[0]
        flat = value.float().reshape(blocks, -1)
        scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / 127
        return {key: torch.round(flat / scale).to(torch.int8).reshape(value.shape), key + SCALE: scale.reshape(blocks)}
    return {key: value.half()}


def unpacked(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 tensors that `packed` stored (integer tensors as they were); ValueError names a key whose int8
    weights and scales do not fit together."""
    state = {}
    for key, value in tensors.items():
        if key.endswith(SCALE):
            continue
        scale = tensors.get(key + SCALE)
        if scale is None and value.dtype != torch.int8:
            state[key] = value.float() if value.dtype == torch.float16 else value
            continue
        if scale is None or value.dtype != torch.int8 or scale.numel() == 0 or value.numel() % scale.numel():
            raise ValueError(f"{key}: {value.dtype} {tuple(value.shape)} with "
                             f"{'no scales' if scale is None else f'{scale.numel()} scale(s)'}")
        state[key] = (value.float().reshape(scale.numel(), -1) * scale.reshape(-1, 1)).reshape(value.shape)
    return state


def write_bundle(routes: list[RouteModels], folder: Path, card: dict, by_composition: bool,
                 data_dir: str | None = None, precision: str = "float32",
                 extend: str | Path | None = None, keep: dict[str, int | None] | None = None
                 ) -> tuple[Path, list[Route]]:
    """Bundle the routes' models into `folder`, with the model card's facts and each route's training domain
    (`precision`: how the weights are stored, `packed`); returns the manifest's path and the routes
    (`check_routes`). `extend`: a bundle (folder or shipped name) whose members and routes are kept and the new
    routes added, its card updated by `card` (a key given as None is removed; its members stored again in
    `precision`); `keep`: only these of its routes, each with its first N members (None: all of them)."""
    from safetensors.torch import save

    if precision not in PRECISIONS:
        raise ParaisiteError(f"precision {precision!r}: give one of {', '.join(PRECISIONS)}")
    tensors, members, written = {}, [], []

    def add(name: str, config: dict, state: dict, origin) -> None:
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise ParaisiteError(f"{origin}: state entry {key!r} is not a tensor ({type(value).__name__}); "
                                     "only network members can be bundled")
            tensors.update(packed(f"{name}/{key}", value.detach().cpu().contiguous().clone(), precision))
        members.append({"name": name, "config": config})

    if extend is not None:
        kept, kept_card, written = read_bundle(extend)
        written = kept_routes(written, keep, extend)
        names = {name for route in written for name in route.members}
        for member in kept:
            if member.name in names:
                add(member.name, member.config, member.state_dict, extend)
        card = {k: v for k, v in {**kept_card, **card}.items() if v is not None}  # a key given as null goes
    check_routes([*written, *routes])
    for route in routes:
        names = []
        for path in route.models:
            name = f"m{len(members)}-{path.parent.name}"
            add(name, *read_model_file(path), path)
            names.append(name)
        configs = [m["config"] for m in members[-len(names):]]
        space_groups = (training_space_groups(configs, route.stoichiometry, by_composition, data_dir)
                        if route.stoichiometry else None)
        bte_kinds = tuple(training_kinds(configs, by_composition, data_dir).items()) if route.needs_bte else ()
        domain = training_domain(configs, by_composition, data_dir)
        written.append(Route(route.name, route.stoichiometry, space_groups, tuple(names), domain, route.interval,
                             route.prior, bte_kinds, route.bte_potentials))
    check_routes(written)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / WEIGHTS, save(tensors))
    manifest = {"format": BUNDLE_FORMAT, "members": members, "card": card,
                "routes": [r.to_json() for r in written]}
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return folder / MANIFEST, written


def kept_routes(routes: list[Route], keep: dict[str, int | None] | None, bundle) -> list[Route]:
    """The routes of `bundle` that `keep` names (None: all), each trimmed to its first N members."""
    if keep is None:
        return routes
    by_name = {r.name: r for r in routes}
    for name, n in keep.items():
        if name not in by_name:
            raise ParaisiteError(f"--keep {name}: {bundle} has no such route (its routes: {', '.join(by_name)})")
        if n is not None and not 1 <= n <= len(by_name[name].members):
            raise ParaisiteError(f"--keep {name}:{n}: route {name} of {bundle} has {len(by_name[name].members)} "
                                 "member(s); keep 1 to all of them")
    return [replace(r, members=r.members[:keep[r.name]]) for r in routes if r.name in keep]


def read_bundle(model: str | Path) -> tuple[list[BundleMember], dict, list[Route]]:
    """(members, card, routes) of a bundle folder or shipped bundle name."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = bundle_folder(model)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        tensors = load_file(folder / WEIGHTS)
    except (OSError, ValueError, SafetensorError) as exc:
        raise ParaisiteError(f"{folder}: unreadable model bundle ({exc})") from None
    if manifest.get("format") not in (1, 2, BUNDLE_FORMAT):
        raise ParaisiteError(f"{folder / MANIFEST}: bundle format {manifest.get('format')!r}, this paraisite reads "
                             f"formats 1 to {BUNDLE_FORMAT}")
    members = []
    for m in manifest["members"]:
        prefix = f"{m['name']}/"
        try:
            state = unpacked({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
        except ValueError as exc:
            raise ParaisiteError(f"{folder / WEIGHTS}: member {m['name']}: unreadable weights ({exc})") from None
        if not state:
            raise ParaisiteError(f"{folder / WEIGHTS}: no weights for member {m['name']}")
        members.append(BundleMember(m["name"], m["config"], state))
    if manifest["format"] == 1:
        domain = manifest["domain"]
        routes = [{"name": "all", "stoichiometry": None, "space_groups": None, "members": [m.name for m in members],
                   "domain": domain}]
    else:
        routes = manifest["routes"]
    return members, manifest["card"], [
        Route(r["name"], tuple(r["stoichiometry"]) if r["stoichiometry"] else None,
              tuple(r["space_groups"]) if r["space_groups"] else None, tuple(r["members"]),
              Domain(frozenset(r["domain"]["elements"]), r["domain"]["max_atoms"]),
              Interval.from_json(r["interval"]) if r.get("interval") else None,
              Prior.from_json(r["prior"]) if r.get("prior") else None,
              tuple((tuple(s), tuple(g) if g else None) for s, g in r.get("bte_kinds") or ()),
              # a BTE route written before `bte_potentials`: SevenNet-0's
              tuple(r.get("bte_potentials") or ((DEFAULT_POTENTIAL,) if r.get("bte_kinds") else ())))
        for r in routes]
