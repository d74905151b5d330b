"""Precision handling: losses compute in float32 (or float64) whatever the caller's autocast says.

Half-precision logs, exps and squared distances lose too much range (``exp(12)`` overflows
float16; bfloat16 keeps 8 mantissa bits), so every functional loss is wrapped with
:func:`float32_compute`: autocast is switched off inside, float16/bfloat16 tensor arguments are
upcast to float32 (gradients still flow back to the half-precision originals), and the loss comes
back in float32. float64 inputs stay float64 so ``gradcheck`` sees the true function.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from ._reduction import bare_weight_error

__all__ = ["float32_compute", "upcast", "autocast_disabled"]

_HALF = (torch.float16, torch.bfloat16)


def upcast(x):
    """Return ``x`` as float32 if it is a float16/bfloat16 tensor, else unchanged."""
    if isinstance(x, torch.Tensor) and x.dtype in _HALF:
        return x.float()
    return x


@contextlib.contextmanager
def autocast_disabled():
    """Switch autocast off on CPU (and CUDA when present) inside the block."""
    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield


def _autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu") or (torch.cuda.is_available() and torch.is_autocast_enabled("cuda"))


def float32_compute(fn):
    """Decorator: run ``fn`` with autocast disabled and half-precision tensor arguments upcast.

    Written so that ``torch.compile(fullgraph=True)`` inlines it: plain ``torch.autocast``
    context managers (no ``ExitStack``, no generator context manager), no state kept between
    calls, so tracing neither breaks the graph nor guards on anything that changes per call.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "weight" in kwargs:  # every functional loss goes through here: one guard for all
            raise bare_weight_error(fn.__name__)
        args = tuple(upcast(a) for a in args)
        kwargs = {k: upcast(v) for k, v in kwargs.items()}
        if not _autocast_on():
            return fn(*args, **kwargs)
        with torch.autocast("cpu", enabled=False):
            if torch.cuda.is_available():
                with torch.autocast("cuda", enabled=False):
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)

    return wrapper
