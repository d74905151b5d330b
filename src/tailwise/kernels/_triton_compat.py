"""Compatibility shims for running the Triton kernels in Triton's CPU interpreter (tests).

Imported by the Triton kernel modules only when ``TRITON_INTERPRET=1``; never on the GPU path.
"""

from __future__ import annotations


def patch_interpreter_index() -> None:
    """Let the interpreter use a runtime scalar as a ``range`` bound under NumPy >= 2.4.

    Triton 3.6's interpreter keeps scalars as 1-element arrays and implements ``__index__`` as
    ``int(array)``, which NumPy 2.4 turned into an error ("only 0-dimensional arrays can be
    converted to Python scalars"), so every ``for start in range(0, L, BLOCK)`` over a runtime
    ``L`` fails. Re-register ``__index__`` with ``.item()`` (same value) after Triton's own patch.
    """
    try:
        import triton.runtime.interpreter as interp
    except Exception:  # noqa: BLE001 - no interpreter, nothing to patch
        return
    original = getattr(interp, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_tailwise_index", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    patched._tailwise_index = True
    interp._patch_lang_tensor = patched
