"""``float32_compute`` that lets a Triton kernel read 16-bit logits directly.

``tailwise._precision.float32_compute`` upcasts float16/bfloat16 arguments to float32 before
the loss runs: right for the torch path (half-precision ``exp``/``log`` lose range), but a copy
of the whole ``(N, C)`` tensor (and another one for its gradient) that a kernel accumulating in
float32 does not need. :func:`float32_compute_unless_kernel` keeps the first positional argument
(the logits) in its own dtype when the given op will run its Triton kernel on it; everything
else is upcast as before, so the torch path sees exactly what it saw before.
"""

from __future__ import annotations

import functools

import torch

from .._precision import autocast_disabled, float32_compute, upcast
from .._reduction import bare_weight_error
from ._dispatch import select

__all__ = ["float32_compute_unless_kernel"]

_HALF = (torch.float16, torch.bfloat16)


def float32_compute_unless_kernel(op: str):
    """Decorator factory: ``float32_compute``, except that a half-precision ``input`` (first
    positional argument) bound for op ``op``'s Triton kernel is passed through unchanged."""

    def deco(fn):
        upcasting = float32_compute(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if "weight" in kwargs:  # same guard as float32_compute, also on the kernel path
                raise bare_weight_error(fn.__name__)
            x = args[0] if args else kwargs.get("input")
            if isinstance(x, torch.Tensor) and x.dtype in _HALF and select(op, x) == "triton":
                if args:
                    args = (x,) + tuple(upcast(a) for a in args[1:])
                kwargs = {k: (v if k == "input" else upcast(v)) for k, v in kwargs.items()}
                with autocast_disabled():
                    return fn(*args, **kwargs)
            return upcasting(*args, **kwargs)

        return wrapper

    return deco
