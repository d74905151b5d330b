"""Host-side integer helpers of the Triton launchers.

``triton.cdiv`` and ``triton.next_power_of_2`` are ``ConstexprFunction`` objects in Triton 3.x:
called from host code each costs a few microseconds (argument unwrapping, an import), and a
loss call made about ten of them per forward + backward. These plain functions return the same
integers.
"""

from __future__ import annotations

__all__ = ["cdiv", "next_pow2"]


def cdiv(x: int, y: int) -> int:
    """``ceil(x / y)`` for integers (``triton.cdiv``)."""
    return (x + y - 1) // y


def next_pow2(n: int) -> int:
    """The smallest power of two ``>= n`` for ``n >= 1``; 0 for ``n <= 0`` (``triton.next_power_of_2``)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
