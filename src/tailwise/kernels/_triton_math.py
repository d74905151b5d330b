"""Accurate elementary functions for the Triton kernels (imported only with Triton).

``log1p`` and ``expm1`` are not in ``triton.language`` (libdevice has them on CUDA but not in
the interpreter), and the naive ``log(1 + u)`` / ``exp(l) - 1`` lose every digit for tiny
arguments: ``softplus(-16)`` came out as 1.19e-7 instead of 1.1254e-7. Goldberg's and Kahan's
corrections give a few ulps with one extra division and no branch on the data.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def log1p(u):
    """``log(1 + u)`` for ``u >= 0`` to a few ulps (Goldberg: scale by ``u / ((1 + u) - 1)``)."""
    v = 1.0 + u
    d = v - 1.0
    safe = tl.where(d == 0.0, 1.0, d)
    return tl.where(d == 0.0, u, tl.log(v) * (u / safe))


@triton.jit
def expm1(x):
    """``exp(x) - 1`` to a few ulps (Kahan: ``(e - 1) x / log(e)``); exact 0 at 0."""
    e = tl.exp(x)
    em1 = e - 1.0
    lg = tl.log(e)
    ok = (em1 != 0.0) & (em1 != -1.0) & (lg != 0.0)
    safe_lg = tl.where(ok, lg, 1.0)
    return tl.where(ok, em1 * (x / safe_lg), tl.where(em1 == -1.0, -1.0, x))


@triton.jit
def softplus(x):
    """``log(1 + e^x)`` without overflow: ``max(x, 0) + log1p(e^{-|x|})``."""
    return tl.maximum(x, 0.0) + log1p(tl.exp(-tl.abs(x)))
