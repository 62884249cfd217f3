"""Read upstream's legacy pickles without executing anything they contain.

`SafeUnpickler` resolves only numpy's array/dtype reconstructors (plain data); every other class or function the
pickle names becomes an inert `Stub` that records its arguments and state. Nothing is imported from the pickle,
nothing it names is called. Structures are then rebuilt from the raw lattice, species and fractional coordinates.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from paraisite.errors import DataError

SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),  # numpy arrays in protocol-2 pickles
}


class Stub:
    """Stands in for any class or function named by the pickle: calling it, or setting its state, only records."""

    module = name = ""
    args: tuple = ()
    kwargs: dict = {}
    state = None

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<{self.module}.{self.name} args={len(self.args)}>"


def stub_class(module: str, name: str) -> type:
    return type(name, (Stub,), {"module": module, "name": name})


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        return stub_class(module, name)


def safe_loads(data: bytes):
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"unreadable legacy pickle ({type(exc).__name__}: {exc})") from None


def instance_of(obj) -> tuple[str, dict | tuple]:
    """(class name, state) of a stubbed object, seeing through copyreg._reconstructor."""
    if isinstance(obj, Stub) and obj.name == "_reconstructor" and obj.args and isinstance(obj.args[0], type):
        return obj.args[0].name, obj.state if obj.state is not None else {}
    if isinstance(obj, Stub):
        return obj.name, obj.state if obj.state is not None else obj.args
    raise DataError(f"expected a pickled object, found {type(obj).__name__}")


def element_symbol(obj) -> str:
    """Element / Species stubs (Element is an Enum pickled by its symbol) → symbol."""
    name, state = instance_of(obj)
    if name == "Element" and obj.args:
        return str(obj.args[0])
    for key in ("_el", "element", "symbol", "_symbol"):
        if isinstance(state, dict) and key in state:
            value = state[key]
            return value if isinstance(value, str) else element_symbol(value)
    raise DataError(f"cannot read an element from a pickled {name}")


def site_species(site_state: dict) -> str:
    species = site_state.get("_species") or site_state.get("species")
    name, state = instance_of(species)
    data = state.get("_data", state) if isinstance(state, dict) else {}
    if name != "Composition" or len(data) != 1:
        raise DataError(f"site species must be one element, found {name} with {len(data)} entries")
    (element,) = data.keys()
    return element_symbol(element)


def structure_from_stub(obj) -> dict:
    """A pymatgen Structure stub → `Structure.as_dict()`-compatible dict rebuilt from raw arrays."""
    from pymatgen.core import Lattice, Structure

    name, state = instance_of(obj)
    if name not in ("Structure", "IStructure") or not isinstance(state, dict):
        raise DataError(f"expected a pickled pymatgen Structure, found {name}")
    _, lattice_state = instance_of(state["_lattice"])
    matrix = np.asarray(lattice_state.get("_matrix", lattice_state.get("matrix")), dtype=float).reshape(3, 3)
    species, coords = [], []
    for site in state["_sites"]:
        _, site_state = instance_of(site)
        species.append(site_species(site_state))
        coords.append(np.asarray(site_state["_frac_coords"], dtype=float))
    return Structure(Lattice(matrix), species, coords).as_dict()
