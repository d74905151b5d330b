"""CI check: ``python -m build`` makes a wheel that installs and imports in a clean venv.

Offline-friendly and fast: the wheel is built without build isolation (the dev venv has
setuptools), installed with ``--no-deps`` into a fresh venv, and torch/numpy are borrowed from
the running interpreter through a path file (only their directory is added: the editable
install of tailwise living there is not activated, since ``.pth`` files of an added path are not
processed). The check then imports tailwise from the fresh venv, from a directory outside the
repository, and verifies the shipped files (``py.typed``, LICENSE) and the console script.

    python tools/check_wheel.py [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tailwise-wheel-"))
    try:
        dist = tmp / "dist"
        run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, ROOT],
            stdout=subprocess.DEVNULL)
        wheels = list(dist.glob("tailwise-*.whl"))
        assert len(wheels) == 1, wheels
        names = zipfile.ZipFile(wheels[0]).namelist()
        for required in ("tailwise/py.typed", "tailwise/__init__.py", "tailwise/_version.py"):
            assert required in names, f"{required} missing from {wheels[0].name}"
        assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names), "LICENSE not in the wheel"
        assert not any(n.startswith(("tests/", "examples/", "docs/")) for n in names), "test/doc files in the wheel"

        env_dir = tmp / "venv"
        venv.EnvBuilder(with_pip=False).create(env_dir)
        py = env_dir / "bin" / "python"
        site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        # borrow torch and numpy (no download, no second torch)
        (site / "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheels[0]])
        check = ("import pathlib, sys, tailwise, tailwise.functional, tailwise.metrics; "
                 "f = pathlib.Path(tailwise.__file__); "
                 f"assert str(f).startswith({str(env_dir)!r}), f; "
                 "assert (f.parent / 'py.typed').exists(); "
                 "assert 'torchmetrics' not in sys.modules; "
                 "import torch; l = tailwise.build_loss('cross_entropy')(torch.zeros(2, 3), torch.tensor([0, 1])); "
                 "print('wheel ok: tailwise', tailwise.__version__, 'from', f.parent)")
        run([py, "-c", check], cwd=tmp)
        out = subprocess.run([env_dir / "bin" / "tailwise", "--version"], check=True, capture_output=True,
                             text=True, cwd=tmp).stdout.strip()
        import importlib.util

        spec = importlib.util.spec_from_file_location("_v", ROOT / "src" / "tailwise" / "_version.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert out == f"tailwise {mod.__version__}", out
        print(f"console script ok: {out}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
