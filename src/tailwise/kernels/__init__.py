"""Fused kernels behind one dispatch point (see :mod:`tailwise.kernels._dispatch`).

``TAILWISE_KERNELS=auto|torch|triton`` or :func:`set_backend` choose the implementation; the
torch implementations are the reference and the CPU path. Triton is optional
(``pip install tailwise[gpu]``) and only imported when a Triton kernel is about to run.
``docs/kernels.md`` maps each op to its backends and the losses that use it.
"""

from ._dispatch import (BACKENDS, KernelBackendError, backend, dispatch, get_backend, list_ops,
                        register_op, select, set_backend, triton_available, triton_interpreter)

__all__ = ["BACKENDS", "KernelBackendError", "backend", "dispatch", "get_backend", "list_ops",
           "register_op", "select", "set_backend", "triton_available", "triton_interpreter"]

# op modules register themselves on import (their Triton kernels stay unimported)
from . import linear_ce, sigmoid_family, softmax_ce  # noqa: E402,F401
from .softmax_ce import inplace_gradients, softmax_cross_entropy  # noqa: E402,F401

__all__ += ["inplace_gradients", "softmax_cross_entropy"]
