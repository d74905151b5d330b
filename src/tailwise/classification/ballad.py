"""BALLAD's balanced adapter (Ma et al., arXiv 2111.14745): phase B of Balanced Linear Adapter."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_floating, check_positive, check_probability

__all__ = ["BalancedAdapter"]


class BalancedAdapter(nn.Module):
    r"""Residual linear adapter on frozen image features, scored against class text embeddings.

    .. math::
        f' = \mathrm{n}\big(\alpha A f + (1 - \alpha) f\big), \qquad z_c = s\, f' \cdot \mathrm{n}(t_c)

    with ``A`` a ``D x D`` linear map without bias (PyTorch's default initialisation),
    :math:`\alpha = 0.2` (hard-coded in gaopengcuhk/BALLAD), ``s = 100`` (CLIP's logit scale)
    and :math:`t_c` the frozen text feature of class ``c`` (e.g. CLIP's embedding of
    "a photo of a {class}."). Train it with plain cross-entropy under
    :class:`tailwise.data.ClassAwareSampler` (``samples_per_class=4``), as BALLAD's phase B
    (10 epochs, SGD lr 0.2). The CLIP backbone is out of scope: the adapter takes features.

    Args:
        text_features: ``(C, D)`` class embeddings (normalised and stored as a buffer).
        alpha: residual mixing weight of the adapter.
        scale: logit scale ``s``.

    Example:
        >>> import torch, tailwise
        >>> adapter = tailwise.BalancedAdapter(torch.randn(5, 16))
        >>> adapter(torch.randn(3, 16)).shape
        torch.Size([3, 5])
    """

    def __init__(self, text_features: Tensor, alpha: float = 0.2, scale: float = 100.0) -> None:
        super().__init__()
        check_floating(text_features, "text_features", ndim=2)
        dim = text_features.shape[1]
        if text_features.shape[0] == 0 or dim == 0:
            raise ValueError(f"text_features must be a non-empty (C, D) tensor, got shape {tuple(text_features.shape)}")
        self.alpha = check_probability(alpha, "alpha")
        self.scale = check_positive(scale, "scale")
        self.adapter = nn.Linear(dim, dim, bias=False)
        self.register_buffer("text_features", F.normalize(text_features.detach().float(), dim=1))

    def adapt(self, features: Tensor) -> Tensor:
        """The adapted, unit-norm image features ``f'``."""
        check_floating(features, "features", ndim=2)
        if features.shape[1] != self.adapter.in_features:
            raise ValueError(f"features must have {self.adapter.in_features} columns, got shape {tuple(features.shape)}")
        mixed = self.alpha * self.adapter(features) + (1.0 - self.alpha) * features
        return F.normalize(mixed, dim=1)

    def forward(self, features: Tensor) -> Tensor:
        f = self.adapt(features)
        return self.scale * f @ self.text_features.to(f.dtype).T

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, scale={self.scale}"
