"""Balanced MSE, GMM-based analytic integration (GAI)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import assert_values, check_positive, host_value_checks
from ..registry import register_loss
from ._checks import SigmaLike, as_rows, as_sigma, as_stat, check_all_positive
from .gmm import fit_gmm

__all__ = ["gai_loss", "GAILoss"]


def _gmm_spectrum(means: Tensor, variances: Tensor, weights: Tensor, d: int
                  ) -> Tuple[Tensor, Tensor, Optional[Tensor], Tensor]:
    """Normalise GMM statistics to means (K, D), per-axis variances (K, D), an optional rotation
    (K, D, D) (None for diagonal covariances) and weights (K,)."""
    if weights.dim() != 1 or weights.numel() == 0:
        raise ValueError(f"weights must be a non-empty (K,) tensor of mixture weights, got shape "
                         f"{tuple(weights.shape)}")
    k = weights.shape[0]
    check_all_positive(weights, "weights")
    if means.dim() == 1 and d == 1:
        means = means[:, None]
    if means.shape != (k, d):
        raise ValueError(f"means must be ({k}, {d}) (or ({k},) for 1-D targets) to match weights ({k},) "
                         f"and targets with D={d}, got shape {tuple(means.shape)}")
    if variances.shape in ((k,), (k, 1, 1)) and d == 1:
        variances = variances.reshape(k, 1)
    if variances.shape == (k, d):
        check_all_positive(variances, "variances")
        return means, variances, None, weights
    if variances.shape == (k, d, d):
        lam, rot = torch.linalg.eigh(variances)
        if not host_value_checks(lam):
            assert_values(lam.detach() > 0, "variances must be positive definite covariance matrices")
        elif not bool((lam.detach() > 0).all()):
            raise ValueError(f"variances must be positive definite covariance matrices, got an "
                             f"eigenvalue {lam.detach().min().item():.4g}")
        return means, lam, rot, weights
    raise ValueError(f"variances must be ({k}, {d}) diagonal variances or ({k}, {d}, {d}) covariance "
                     f"matrices (or ({k},) for 1-D targets), got shape {tuple(variances.shape)}")


@float32_compute
def gai_loss(pred: Tensor, target: Tensor, noise_sigma: SigmaLike, means: Tensor, variances: Tensor,
             weights: Tensor, *, sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Balanced MSE with GMM-based analytic integration (GAI), Ren et al. CVPR 2022.

    With the training-label density modelled as :math:`p_{train}(y) = \sum_k \pi_k
    \mathcal N(y; \mu_k, \Sigma_k)`, the normaliser of the balanced likelihood is analytic and

    .. math::
        \ell_i = 2\sigma^2_{\text{detached}} \Big( \underbrace{\frac{\|\hat y_i - y_i\|^2}{2\sigma^2}
        + \frac D2 \log \sigma^2}_{-\log \mathcal N(y_i;\,\hat y_i,\,\sigma^2 I) - \frac D2 \log 2\pi}
        + \underbrace{\log \sum_k \pi_k\, \mathcal N(\hat y_i;\, \mu_k,\, \Sigma_k + \sigma^2 I)
        + \frac D2 \log 2\pi}_{\text{balancing term}} \Big).

    The two :math:`\frac D2 \log 2\pi` constants cancel, which is exactly the official form
    (``gai_loss`` in ``imdb-wiki-dir/balanaced_mse.py`` writes the 1-D case without them;
    ``gai_loss_md`` in ``synthetic_benchmark/loss.py`` keeps both via ``MultivariateNormal``): the
    value is :math:`-\log p_{bal}(y|\hat y)` up to the factor :math:`2\sigma^2`.

    **What the value means / why it can be negative.** It is a (scaled) negative log *density*
    ratio, not a squared error: :math:`-\log\mathcal N(y;\hat y,\sigma^2) + \log p_{pred}(\hat y)`.
    Densities can exceed 1 and the balancing term is large where the training labels are dense,
    so the loss is negative whenever the prediction is closer to its label than the typical
    spread of the label distribution allows; only its changes matter for training.

    Args:
        pred, target: ``(N,)``, ``(N, 1)`` or ``(N, D)``, same shape; target finite.
        noise_sigma: :math:`\sigma > 0` (float or scalar tensor; learnable in :class:`GAILoss`).
        means: ``(K,)`` (1-D) or ``(K, D)`` component means.
        variances: ``(K,)`` (1-D), ``(K, D)`` diagonal variances or ``(K, D, D)`` full covariances
            (scikit-learn's ``covariances_`` with ``covariance_type="full"`` fits as is).
        weights: ``(K,)`` mixture weights, strictly positive (normally summing to 1; they are used
            as given, like the official code).
        sample_weight: optional per-sample weights ``(N,)``.
        reduction: ``"mean"`` (official), ``"sum"`` or ``"none"`` (per-sample ``(N,)``).

    Example:
        >>> import torch
        >>> from tailwise.functional import gai_loss
        >>> pred, y = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0])
        >>> loss = gai_loss(pred, y, 1.0, means=torch.tensor([2.0]), variances=torch.tensor([1.0]),
        ...                 weights=torch.tensor([1.0]))
    """
    p, t = as_rows(pred, target)
    d = p.shape[1]
    var = as_sigma(noise_sigma, "noise_sigma", p).square()
    means = as_stat(means, "means", p)
    variances = as_stat(variances, "variances", p)
    weights = as_stat(weights, "weights", p)
    mu, lam, rot, w = _gmm_spectrum(means, variances, weights, d)
    mse_term = (p - t).square().sum(1) / (2 * var) + 0.5 * d * torch.log(var)
    if d == 1:
        diff2 = (p - mu.T).square()                        # (N, K)
        s = lam.T + var                                    # (1, K)
        comp = torch.log(w) - 0.5 * torch.log(s) - 0.5 * diff2 / s
    else:
        diff = p[:, None, :] - mu[None]                    # (N, K, D)
        if rot is not None:                                # coordinates along each covariance's axes
            diff = torch.einsum("nkd,kde->nke", diff, rot)
        s = lam + var                                      # (K, D)
        comp = torch.log(w) - 0.5 * torch.log(s).sum(1) - 0.5 * (diff.square() / s).sum(2)
    balancing = torch.logsumexp(comp, 1)
    loss = (mse_term + balancing) * (2 * var).detach()
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("gai")
class GAILoss(Loss):
    r"""Balanced MSE with GMM analytic integration (GAI) and a learnable ``noise_sigma``.

    The GMM of the training labels (``means``, ``variances``, ``weights``) is stored as buffers,
    so it travels with ``state_dict()``; ``noise_sigma`` is an ``nn.Parameter`` (add it to the
    optimizer to learn it). Build it directly from the training labels with
    :meth:`from_labels`, which runs :func:`tailwise.fit_gmm` (official: scikit-learn's
    ``GaussianMixture``, K=8 for IMDB-WIKI-DIR, 1 / 64 components in the synthetic benchmark).
    See :func:`tailwise.functional.gai_loss` for the formula and why the value can be negative.

    Example:
        >>> import torch, tailwise
        >>> labels = torch.randn(1000).exp()              # skewed training labels
        >>> criterion = tailwise.GAILoss.from_labels(labels, n_components=4)
        >>> loss = criterion(torch.randn(16, 1), labels[:16, None])
    """

    def __init__(self, means, variances, weights, init_noise_sigma: float = 1.0,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        check_positive(init_noise_sigma, "init_noise_sigma")
        ref = torch.empty(0)
        means, variances, weights = (as_stat(means, "means", ref), as_stat(variances, "variances", ref),
                                     as_stat(weights, "weights", ref))
        d = 1 if means.dim() == 1 else means.shape[1]
        _gmm_spectrum(means, variances, weights, d)  # validate once at construction
        self.register_buffer("means", means)
        self.register_buffer("variances", variances)
        self.register_buffer("weights", weights)
        self.noise_sigma = nn.Parameter(torch.tensor(float(init_noise_sigma)))

    @classmethod
    def from_labels(cls, labels: Tensor, n_components: int = 8, *, init_noise_sigma: float = 1.0,
                    seed: int = 0, reduction: str = "mean", **fit_kwargs) -> "GAILoss":
        """Fit a ``n_components`` GMM to ``labels`` (``(N,)`` or ``(N, D)``) and build the loss."""
        fit = fit_gmm(labels, n_components, seed=seed, **fit_kwargs)
        return cls(fit.means, fit.variances, fit.weights, init_noise_sigma=init_noise_sigma,
                   reduction=reduction)

    def forward(self, pred: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return gai_loss(pred, target, self.noise_sigma, self.means, self.variances, self.weights,
                        sample_weight=sample_weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return (f"n_components={self.weights.numel()}, noise_sigma={self.noise_sigma.item():.4g}, "
                f"reduction={self.reduction!r}")
