"""The one dispatch point for every fused op: ``{op: {"torch", "compile", "triton"}}``.

Each op module in this package registers its implementations with :func:`register_op`; loss
code calls :func:`dispatch` (or :func:`select` then its own call) and never imports Triton.

Selection, in order:

1. :func:`set_backend` (process-wide) or the ``TAILWISE_KERNELS`` environment variable:
   ``"auto"`` (default), ``"torch"`` or ``"triton"``.
2. ``"torch"`` always runs the torch implementation (the reference, and the CPU path). An op may
   also register a ``"compile"`` implementation; ``"torch"`` then means "torch, compiled where
   the op's own size rule says so" (the CPU thresholds that were tuned on 2 cores).
3. ``"triton"`` was *asked for*: it runs the Triton kernel or raises :class:`KernelBackendError`
   saying why (Triton not importable, CPU tensors without ``TRITON_INTERPRET=1``, no Triton
   kernel for the op).
4. ``"auto"`` uses Triton when every tensor argument is on CUDA, Triton imports, and the op has a
   Triton kernel; otherwise the torch path. If an automatically chosen Triton kernel fails, one
   warning is issued and that op falls back to torch for the rest of the process.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional

import torch

__all__ = [
    "BACKENDS",
    "KernelBackendError",
    "register_op",
    "list_ops",
    "get_backend",
    "set_backend",
    "backend",
    "triton_available",
    "triton_interpreter",
    "select",
    "dispatch",
]

BACKENDS = ("auto", "torch", "triton")
_ENV = "TAILWISE_KERNELS"


class KernelBackendError(RuntimeError):
    """A kernel backend that was explicitly requested cannot run these inputs."""


@dataclass
class _Op:
    name: str
    torch: Callable
    triton: Optional[str] = None          # "module:attr", imported lazily
    compile: Optional[Callable] = None    # torch path variant chosen by the op's own size rule
    losses: tuple = ()                    # registry names that use the op (for docs/kernels.md)
    _triton_fn: Optional[Callable] = field(default=None, repr=False)
    _auto_failed: bool = field(default=False, repr=False)


_OPS: Dict[str, _Op] = {}
_STATE: Dict[str, Optional[str]] = {"backend": None}
_TRITON: Dict[str, object] = {}


def register_op(name: str, *, torch: Callable, triton: Optional[str] = None,
                compile: Optional[Callable] = None, losses=()) -> None:
    """Register the implementations of op ``name``.

    ``triton`` is a ``"module:function"`` string so that registering never imports Triton.
    """
    _OPS[name] = _Op(name, torch, triton, compile, tuple(losses))


def list_ops() -> Dict[str, dict]:
    """Map each op to its backends and the losses that use it."""
    _load_all()
    return {name: {"backends": ["torch"] + (["compile"] if op.compile else []) + (["triton"] if op.triton else []),
                   "losses": list(op.losses)} for name, op in sorted(_OPS.items())}


def _load_all() -> None:
    # ops register on import of their module; importing tailwise imports them all already
    importlib.import_module("tailwise")


def get_backend() -> str:
    """The backend in force: :func:`set_backend`'s, else ``$TAILWISE_KERNELS``, else ``"auto"``."""
    name = _STATE["backend"] or os.environ.get(_ENV, "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"{_ENV} must be one of {BACKENDS}, got {name!r}")
    return name


def set_backend(name: Optional[str]) -> None:
    """Set the kernel backend for the process (``None`` returns to ``$TAILWISE_KERNELS``)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")
    _STATE["backend"] = name


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Context manager form of :func:`set_backend`."""
    old = _STATE["backend"]
    set_backend(name)
    try:
        yield
    finally:
        _STATE["backend"] = old


def triton_interpreter() -> bool:
    """True when Triton kernels run in the interpreter (``TRITON_INTERPRET=1``), on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _constant_under_compile(fn: Callable) -> Callable:
    """``torch.compiler.assume_constant_result`` without importing ``torch._dynamo`` (which imports
    Triton) when tailwise is imported: Dynamo then calls ``fn`` outside the trace (imports included)."""
    fn._dynamo_marked_constant = True
    return fn


@_constant_under_compile  # the import runs outside a torch.compile trace
def triton_available() -> bool:
    """True when ``import triton`` works (checked once)."""
    if "ok" not in _TRITON:
        try:
            importlib.import_module("triton")
            _TRITON["ok"] = True
        except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
            _TRITON["ok"] = False
            _TRITON["why"] = f"{type(exc).__name__}: {exc}"
    return bool(_TRITON["ok"])


def _devices_ok_for_triton(tensors) -> Optional[str]:
    """None when the tensors can go to a Triton kernel, else the reason they cannot."""
    on_cuda = [t.is_cuda for t in tensors if isinstance(t, torch.Tensor)]
    if on_cuda and all(on_cuda):
        return None
    if on_cuda and not any(on_cuda) and triton_interpreter():
        return None
    if any(on_cuda):
        return "the tensors are on different devices"
    return "the tensors are on the CPU (set TRITON_INTERPRET=1 to run Triton kernels in its interpreter)"


def select(op: str, *tensors) -> str:
    """Return ``"torch"``, ``"compile"`` or ``"triton"``: the implementation ``op`` uses here."""
    try:
        spec = _OPS[op]
    except KeyError:
        raise KeyError(f"unknown kernel op {op!r}; registered: {', '.join(sorted(_OPS))}") from None
    name = get_backend()
    if name == "torch":
        return "torch"
    if name == "triton":
        if spec.triton is None:
            raise KernelBackendError(f"TAILWISE_KERNELS=triton: op {op!r} has no Triton kernel")
        if not triton_available():
            raise KernelBackendError(f"TAILWISE_KERNELS=triton but Triton cannot be imported "
                                     f"({_TRITON.get('why')}); install tailwise[gpu]")
        why = _devices_ok_for_triton(tensors)
        if why is not None:
            raise KernelBackendError(f"TAILWISE_KERNELS=triton for op {op!r}, but {why}")
        return "triton"
    # auto: Triton only for CUDA tensors (never the interpreter: it is for tests, not speed)
    if (spec.triton is not None and not spec._auto_failed and tensors
            and all(t.is_cuda for t in tensors if isinstance(t, torch.Tensor)) and triton_available()):
        return "triton"
    return "torch"


@_constant_under_compile
def _import_module(module: str) -> bool:
    importlib.import_module(module)
    return True


def _triton_impl(spec: _Op) -> Callable:
    if spec._triton_fn is None:
        module, _, attr = spec.triton.partition(":")
        _import_module(module)
        spec._triton_fn = getattr(sys.modules[module], attr)
    return spec._triton_fn


def dispatch(op: str, *args, **kwargs):
    """Run ``op`` on ``args`` with the selected backend (tensor arguments decide the device)."""
    spec = _OPS[op] if op in _OPS else None
    if spec is None:
        select(op)  # raises the KeyError with the list of ops
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    choice = select(op, *tensors)
    if choice == "triton":
        if get_backend() == "triton":
            return _triton_impl(spec)(*args, **kwargs)
        try:
            return _triton_impl(spec)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - an automatic choice falls back, loudly, once
            spec._auto_failed = True
            warnings.warn(f"tailwise: the Triton kernel for {op!r} failed ({type(exc).__name__}: {exc}); "
                          f"using the torch implementation from now on", RuntimeWarning, stacklevel=2)
    if spec.compile is not None:
        return spec.compile(*args, **kwargs)
    return spec.torch(*args, **kwargs)
