"""Decoupled classifier re-balancing (Kang et al., ICLR 2020): tau-normalisation and LWS.

cRT (classifier re-training) needs no new code: freeze the features, re-initialise the linear
classifier and train it with plain CE under a class-aware sampler (docs/classification.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import _check_number, check_floating

__all__ = ["tau_normalize", "LearnableWeightScaling"]


def tau_normalize(weight: Tensor, tau: float = 1.0) -> Tensor:
    r"""tau-normalised classifier weights :math:`\tilde w_c = w_c / \lVert w_c \rVert_2^{\tau}`.

    ``weight`` is ``(C, D)``, the ``nn.Linear`` layout (one row per class). ``tau=0`` returns the
    weights unchanged, ``tau=1`` unit-norm rows. Following ``facebookresearch/classifier-balancing``
    (``tau_norm.py``, ``pnorm``) the bias is dropped at test time: logits are ``x @ w~.T``. The
    paper scans ``tau`` over 0, 0.1, ..., 2 on a validation split. Differentiable; keeps dtype.

    Example:
        >>> import torch, tailwise
        >>> w = torch.tensor([[3.0, 4.0], [0.6, 0.8]])
        >>> tailwise.tau_normalize(w, tau=1.0)
        tensor([[0.6000, 0.8000],
                [0.6000, 0.8000]])
    """
    check_floating(weight, "weight", ndim=2)
    tau = _check_number(tau, "tau")
    return weight / weight.norm(p=2, dim=1, keepdim=True).pow(tau)


class LearnableWeightScaling(nn.Module):
    r"""LWS: a frozen linear classifier with a learned per-class scale,
    :math:`z_c = f_c\,(w_c \cdot x + b_c)`, ``f`` initialised to 1.

    Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR
    2020 (arXiv 1910.09217). As in the official code the scale multiplies the bias too. The
    wrapped ``linear``'s parameters are frozen (``requires_grad=False``); only ``scales`` trains
    (the paper: class-aware sampler, 5 epochs).

    Example:
        >>> import torch, tailwise
        >>> lws = tailwise.LearnableWeightScaling(torch.nn.Linear(4, 3))
        >>> [n for n, p in lws.named_parameters() if p.requires_grad]
        ['scales']
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        self.linear = linear
        for param in self.linear.parameters():
            param.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(linear.out_features, dtype=linear.weight.dtype,
                                              device=linear.weight.device))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) * self.scales
