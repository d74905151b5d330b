"""Rewrite the explicit per-family import and ``__all__`` lists in ``src/tailwise/__init__.py``
from the families' current ``__all__`` (run after a family exports a new name; the package exports
it at run time anyway, this keeps static type checkers and IDEs in step).

    python tools/sync_init_names.py
"""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path

INIT = Path(__file__).resolve().parents[1] / "src" / "tailwise" / "__init__.py"
FAMILIES = ["boxes", "classification", "contrastive", "ranking", "regression", "segmentation"]


def main() -> int:
    src = INIT.read_text()
    for fam in FAMILIES:
        names = sorted(importlib.import_module(f"tailwise.{fam}").__all__, key=str.lower)
        body = textwrap.wrap(", ".join(names), 100, initial_indent="    ", subsequent_indent="    ")
        imports = f"from .{fam} import (\n" + "\n".join(body) + ",\n)"
        src = re.sub(r"from \.%s import \(\n.*?\n\)" % fam, lambda _, text=imports: text, src, count=1, flags=re.S)
        quoted = textwrap.wrap(", ".join(f'"{n}"' for n in names), 100, initial_indent="    ",
                               subsequent_indent="    ")
        block = f"    # {fam}\n" + "\n".join(quoted) + ",\n"
        src = re.sub(r"    # %s\n(    .*\n)+?(?=    # |\])" % fam, lambda _, text=block: text, src, count=1)
    INIT.write_text(src)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
