"""The front door of the box losses' one op, ``"box_loss"`` in :mod:`tailwise.kernels.box`.

Every aligned-pair loss of the family (IoU, log-IoU, GIoU, DIoU, CIoU, EIoU, Focal-EIoU's EIoU
term, CDIoU) checks metadata here, calls ``tailwise.kernels.dispatch("box_loss", ...)`` (the
torch reference with its hand-derived GIoU/DIoU/CIoU backward, compiled for large CPU batches, or
the Triton kernel on CUDA) and applies the validation policy to the op's ``ok`` flag: exact
``ValueError`` with the bad box's index for eager CPU tensors (or in ``tailwise.validation("full")``),
a device-side assert (no host synchronisation) on CUDA and while ``torch.compile`` traces.

:func:`set_box_backend` / :func:`get_box_backend` choose how the *torch* path runs GIoU/DIoU/CIoU:

* ``"auto"`` (default): eager hand-derived kernels below ``compile_min_boxes`` (131,072 boxes,
  the CPU threshold; other devices never compile) or when compilation is unavailable; compiled
  kernels above. The first large call of each loss pays a one-off compile (about 20-60 s of CPU
  on a small machine; later calls and later sizes reuse it because the kernels are compiled with
  ``dynamic=True``). A failure to compile (no C++ compiler, unsupported platform) falls back to
  eager with one warning.
* ``"eager"``: never compile.
* ``"compile"``: compile whatever the size (useful to warm up at start-up).

Whether the Triton kernel runs instead is decided by ``TAILWISE_KERNELS`` /
:func:`tailwise.kernels.set_backend` (``auto`` picks it for CUDA tensors), not here.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from .._validation import assert_values, check_floating, check_same_shape
from ..kernels import dispatch
from ..kernels.box import FUSED_KINDS, fused_box_loss_torch, get_compile_rule, set_compile_rule
from ._geometry import _check_format, check_pair

__all__ = ["box_loss", "fused_box_loss", "set_box_backend", "get_box_backend"]

_KINDS = FUSED_KINDS


def set_box_backend(backend: str = "auto", compile_min_boxes: Optional[int] = None) -> None:
    """Choose how the torch path runs GIoU/DIoU/CIoU: ``"auto"`` (default), ``"eager"`` or ``"compile"``.

    ``compile_min_boxes`` is the batch size from which ``"auto"`` uses compiled kernels on CPU.
    (The Triton kernels are chosen by ``TAILWISE_KERNELS``, see :mod:`tailwise.kernels`.)
    """
    set_compile_rule(backend, compile_min_boxes)


def get_box_backend() -> dict:
    """The current torch-path settings (a copy)."""
    return get_compile_rule()


def fused_box_loss(pred: Tensor, target: Tensor, eps: float, kind: str,
                   on_invalid: Optional[Callable[[], None]] = None) -> Tensor:
    """Per-box GIoU/DIoU/CIoU loss of ``(..., 4)`` xyxy boxes through the torch path's fused Function.

    ``on_invalid`` is called (it should raise with the exact bad index) when the in-kernel check
    sees an inverted or non-finite box; ``None`` skips the check. (Kept for tests and benchmarks
    of the hand-derived backward; the losses go through :func:`box_loss`.)
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    batch = pred.shape[:-1]
    p = pred.reshape(-1, 4)
    t = target.reshape(-1, 4)
    if p.shape[0] == 0:
        return (p.sum(-1) + t.sum(-1)).reshape(batch)
    out, check = fused_box_loss_torch(p, t, eps, kind)
    if on_invalid is not None and not bool((check[0] >= 0) & check[1].isfinite()):
        on_invalid()
    return out.reshape(batch)


def box_loss(input: Tensor, target: Tensor, box_format: str, eps: float, validate: bool, kind: str, *,
             lambda_: float = 1.0, want_iou: bool = False):
    """Per-pair loss ``(...)`` of ``kind`` (and the IoU, detached, when ``want_iou``).

    Shape/dtype/format checks up front; box validity is checked inside the op.
    """
    _check_format(box_format)
    check_floating(input, "input", last_dim=4)
    check_floating(target, "target", last_dim=4)
    check_same_shape(input, target, "input", "target")
    loss, iou, ok = dispatch("box_loss", input, target, kind, box_format, float(eps), bool(validate),
                             float(lambda_), bool(want_iou))
    # the op answers a Python bool where values may be read on the host (host_value_checks), else
    # a device tensor that must not be read here
    if isinstance(ok, bool):
        if not ok:
            check_pair(input, target, box_format, validate=True)  # raises with the bad box's index
    elif ok is not None:
        assert_values(ok, "input/target hold an inverted (x2 < x1 or y2 < y1) or non-finite box; "
                          "run under tailwise.validation('full') for its index, or pass validate=False")
    return (loss, iou) if want_iou else loss


def checked_fused_box_loss(input: Tensor, target: Tensor, box_format: str, eps: float, validate: bool,
                           kind: str) -> Tensor:
    """GIoU/DIoU/CIoU through :func:`box_loss` (kept for the call sites of giou/diou/ciou)."""
    return box_loss(input, target, box_format, eps, validate, kind)
