"""Why a file was refused by safe loading, in one line (without torch's advice to load it unsafely)."""

from __future__ import annotations

import pickle
import re


def load_error(exc: BaseException) -> str:
    """The reason `torch.load(..., weights_only=True)` failed, for a message naming the file."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)|Unsupported operand (\d+)|Unsupported class ([\w.]+)", text)
        what = "" if found is None else (f": {found.group(1)}" if found.group(1) else
                                         f": pickle opcode {found.group(2)}" if found.group(2) else f": {found.group(3)}")
        return f"it contains code or objects that safe loading refuses{what}; it was not run"
    first = text.strip().split("\n")[0]
    first = re.split(r"(?<=\.) (?=[A-Z])", first)[0]  # the first sentence: the reason, not the advice after it
    return f"{type(exc).__name__}: {first}"
