"""Model bundles: an ensemble of finished runs in one portable folder, no pickle anywhere.

`weights.safetensors` holds every member's tensors (keys `<member>/<parameter>`); `model.json` holds the format, each
member's name and config (with the backbone `spec`, so neither the data folder nor the runs are needed) and the model
card's facts (`card`: training data, recipe, metrics, domain). `paraisite bundle RUN... --output DIR` writes one;
`paraisite predict ... --model DIR|NAME` reads one, NAME being a bundle shipped inside the package
(`paraisite/bundles/<NAME>/`, e.g. `kappa`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from paraisite.errors import ParaisiteError
from paraisite.files import write_atomic
from paraisite.models.io import read_model_file

BUNDLE_FORMAT = 1
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


def write_bundle(models: list[Path], folder: Path, card: dict, by_composition: bool,
                 data_dir: str | None = None) -> tuple[Path, Domain]:
    """Bundle the final models (`model.pt` files) of finished runs into `folder`, with the model card's facts and
    the training domain; returns the manifest's path and the domain."""
    from safetensors.torch import save

    tensors, members = {}, []
    for i, path in enumerate(models):
        config, state = read_model_file(path)
        name = f"m{i}-{path.parent.name}"
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise ParaisiteError(f"{path}: state entry {key!r} is not a tensor ({type(value).__name__}); only "
                                     "network members can be bundled")
            tensors[f"{name}/{key}"] = value.detach().cpu().contiguous().clone()
        members.append({"name": name, "config": config})
    domain = training_domain([m["config"] for m in members], by_composition, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / WEIGHTS, save(tensors))
    manifest = {"format": BUNDLE_FORMAT, "members": members, "card": card, "domain": domain.to_json()}
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return folder / MANIFEST, domain


def read_bundle(model: str | Path) -> tuple[list[BundleMember], dict, Domain]:
    """(members, card, training domain) of a bundle folder or shipped bundle name."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = bundle_folder(model)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        tensors = load_file(folder / WEIGHTS)
    except (OSError, ValueError, SafetensorError) as exc:
        raise ParaisiteError(f"{folder}: unreadable model bundle ({exc})") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ParaisiteError(f"{folder / MANIFEST}: bundle format {manifest.get('format')!r}, this paraisite reads "
                             f"format {BUNDLE_FORMAT}")
    members = []
    for m in manifest["members"]:
        prefix = f"{m['name']}/"
        state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            raise ParaisiteError(f"{folder / WEIGHTS}: no weights for member {m['name']}")
        members.append(BundleMember(m["name"], m["config"], state))
    domain = Domain(frozenset(manifest["domain"]["elements"]), manifest["domain"]["max_atoms"])
    return members, manifest["card"], domain
