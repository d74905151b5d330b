"""Per-loss sample inputs and capability flags, one module per family, for the registry-driven
contract suite (tests/test_contract.py) and the property-based fuzz suite (tests/test_fuzz.py).

Each ``tests/specs/<family>.py`` defines ``SPECS: dict[str, LossSpec]`` keyed by registry name.
:func:`all_specs` merges them; the contract suite asserts every registry name has a spec.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Dict

from ._spec import LossSpec

__all__ = ["LossSpec", "all_specs"]


def all_specs() -> Dict[str, LossSpec]:
    out: Dict[str, LossSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for name, spec in getattr(mod, "SPECS", {}).items():
            if name in out:
                raise ValueError(f"two spec modules declare {name!r}")
            spec.name = name
            out[name] = spec
    return out
