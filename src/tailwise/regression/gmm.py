"""A small, deterministic EM fitter for Gaussian mixtures of training labels (for :class:`GAILoss`).

Written in torch so the core needs no scikit-learn; its defaults mirror
``sklearn.mixture.GaussianMixture`` (full covariances, ``tol=1e-3``, ``reg_covar=1e-6``,
``max_iter=100``, k-means initialisation), which the official Balanced MSE code uses to fit its
GMMs (``preprocess_gmm.py``, ``synthetic_benchmark/utils.py``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._validation import check_finite, check_positive

__all__ = ["fit_gmm", "GMMFit"]


class GMMFit(NamedTuple):
    """Result of :func:`fit_gmm`. For 1-D labels ``(N,)``: ``means``/``variances``/``weights`` are
    ``(K,)``; for ``(N, D)`` labels: ``means (K, D)``, ``variances (K, D, D)`` (full covariances),
    ``weights (K,)`` summing to 1."""

    means: Tensor
    variances: Tensor
    weights: Tensor
    log_likelihood: float  # mean per-sample log-likelihood at the end
    n_iter: int
    converged: bool


def _kmeans(x: Tensor, k: int, gen: torch.Generator, iters: int = 20) -> Tensor:
    """k-means++ seeding then Lloyd iterations; returns hard assignments (N,)."""
    n = x.shape[0]
    centers = x[torch.randint(n, (1,), generator=gen)]
    d2 = torch.cdist(x, centers).square().squeeze(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than components: pick uniformly
            idx = torch.randint(n, (1,), generator=gen)
        else:
            idx = torch.multinomial(d2 / total, 1, generator=gen)
        centers = torch.cat([centers, x[idx]], 0)
        d2 = torch.minimum(d2, (x - x[idx]).square().sum(1))
    assign = torch.cdist(x, centers).argmin(1)
    for _ in range(iters):
        onehot = torch.nn.functional.one_hot(assign, k).to(x.dtype)
        counts = onehot.sum(0)
        sums = onehot.T @ x
        keep = counts > 0
        centers = torch.where(keep[:, None], sums / counts.clamp_min(1)[:, None], centers)
        new = torch.cdist(x, centers).argmin(1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign


def _log_gauss(x: Tensor, means: Tensor, covs: Tensor) -> Tensor:
    """log N(x_n; mu_k, Sigma_k) as (N, K), via Cholesky factors."""
    chol = torch.linalg.cholesky(covs)                               # (K, D, D)
    diff = (x[None, :, :] - means[:, None, :]).transpose(1, 2)      # (K, D, N)
    z = torch.linalg.solve_triangular(chol, diff, upper=False)       # (K, D, N)
    maha = z.square().sum(1)                                         # (K, N)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    d = x.shape[1]
    return (-0.5 * (maha + logdet[:, None] + d * math.log(2 * math.pi))).T


def _m_step(x: Tensor, resp: Tensor, reg_covar: float):
    nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
    means = resp.T @ x / nk[:, None]
    diff = x[None, :, :] - means[:, None, :]                         # (K, N, D)
    covs = torch.einsum("kn,knd,kne->kde", resp.T, diff, diff) / nk[:, None, None]
    covs = covs + reg_covar * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return nk / x.shape[0], means, covs


@torch.no_grad()
def fit_gmm(labels: Tensor, n_components: int, *, max_iter: int = 100, tol: float = 1e-3,
            reg_covar: float = 1e-6, seed: int = 0) -> GMMFit:
    r"""Fit a Gaussian mixture to training labels with EM (full covariances), deterministically.

    Initialisation: k-means++ seeding with ``torch.Generator().manual_seed(seed)`` followed by
    Lloyd iterations (as scikit-learn's default ``init_params="kmeans"``); then EM until the mean
    log-likelihood improves by less than ``tol`` or ``max_iter`` iterations. ``reg_covar`` is
    added to every covariance's diagonal so a component on repeated labels stays invertible.
    Computation is in float64 on the labels' device; results are float64.

    Args:
        labels: training labels ``(N,)`` or ``(N, D)``, finite.
        n_components: number of mixture components ``K`` (``1 <= K <= N``).

    Example:
        >>> import torch
        >>> from tailwise import fit_gmm
        >>> y = torch.cat([torch.randn(500) - 3, torch.randn(500) + 3])
        >>> fit = fit_gmm(y, n_components=2)
        >>> sorted(round(m) for m in fit.means.tolist())
        [-3, 3]
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if not labels.is_floating_point():
        raise TypeError(f"labels must be a floating-point tensor, got dtype {labels.dtype}")
    if labels.dim() not in (1, 2) or labels.shape[0] == 0:
        raise ValueError(f"labels must be a non-empty (N,) or (N, D) tensor, got shape {tuple(labels.shape)}")
    check_finite(labels, "labels")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive int, got {n_components!r}")
    if n_components > labels.shape[0]:
        raise ValueError(f"n_components ({n_components}) must not exceed the number of labels "
                         f"({labels.shape[0]})")
    check_positive(tol, "tol")
    if reg_covar < 0:
        raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
    one_d = labels.dim() == 1
    x = labels.detach().to(torch.float64).reshape(labels.shape[0], -1)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    assign = _kmeans(x.cpu(), n_components, gen).to(x.device)
    resp = torch.nn.functional.one_hot(assign, n_components).to(x.dtype)
    weights, means, covs = _m_step(x, resp, reg_covar)
    prev = -math.inf
    converged, n_iter, ll = False, 0, -math.inf
    for n_iter in range(1, max_iter + 1):
        log_prob = _log_gauss(x, means, covs) + torch.log(weights)
        log_norm = torch.logsumexp(log_prob, 1, keepdim=True)
        ll = float(log_norm.mean())
        resp = torch.exp(log_prob - log_norm)
        weights, means, covs = _m_step(x, resp, reg_covar)
        if abs(ll - prev) < tol:
            converged = True
            break
        prev = ll
    if one_d:
        return GMMFit(means[:, 0], covs[:, 0, 0], weights, ll, n_iter, converged)
    return GMMFit(means, covs, weights, ll, n_iter, converged)
