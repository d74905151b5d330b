"""``--device``: where the bench trains, and the versions every run records.

``auto`` (the default) picks CUDA when ``torch.cuda.is_available()`` and the CPU otherwise; an
explicit ``cuda`` on a machine without one is a one-line user error. On CUDA the classification
task trains under bf16 autocast (mixed precision); the losses compute in float32 internally and
use whatever kernels :mod:`tailwise.kernels` selects for the device (``TAILWISE_KERNELS``).
"""

from __future__ import annotations

import platform
from typing import Dict, List

import torch

from .task import BenchInputError

__all__ = ["DEVICES", "resolve_device", "environment", "describe_environment"]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(args) -> str:
    """``"cpu"`` or ``"cuda"`` from ``args.device`` (``auto`` when absent)."""
    wanted = getattr(args, "device", None) or "auto"
    if wanted not in DEVICES:
        raise BenchInputError(f"--device must be one of {', '.join(DEVICES)}, got {wanted!r}")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        raise BenchInputError(f"--device cuda: no CUDA device is available ({build}); use --device cpu")
    return wanted


def environment(device: str = "cpu") -> Dict[str, object]:
    """Versions and hardware a run depends on; the runner stores it in every record as ``env``."""
    from .. import __version__

    env: Dict[str, object] = {"tailwise": __version__, "torch": torch.__version__,
                              "python": platform.python_version(), "cuda": torch.version.cuda,
                              "cpu": platform.processor() or platform.machine(),
                              "threads": torch.get_num_threads()}
    try:
        import triton  # noqa: F401  (optional: only recorded when installed)
        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def describe_environment(records: List[Dict]) -> str:
    """One phrase naming the devices and versions behind ``records``, e.g. for the report header."""
    devices = sorted({str(r.get("device_name") or r.get("device") or "cpu") for r in records})
    envs = [r.get("env") or {} for r in records]
    torch_v = sorted({str(e.get("torch")) for e in envs if e.get("torch")})
    tw = sorted({str(e.get("tailwise")) for e in envs if e.get("tailwise")})
    parts = [f"device {', '.join(devices) or 'cpu'}"]
    if torch_v:
        parts.append(f"torch {', '.join(torch_v)}")
    if tw:
        parts.append(f"tailwise {', '.join(tw)}")
    cuda = sorted({str(e.get("cuda")) for e in envs if e.get("cuda") and e.get("gpu")})
    if cuda:
        parts.append(f"CUDA {', '.join(cuda)}")
    return "; ".join(parts)
