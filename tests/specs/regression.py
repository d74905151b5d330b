"""Specs of the regression family (see tests/specs/_spec.py)."""

from __future__ import annotations

import tailwise.functional as TF

from ._make import randn
from ._spec import LossSpec


def _pair(d):
    def make(n, device, dtype, gen):
        pred = randn((n, d), gen, device, dtype, grad=True)
        target = randn((n, d), gen, device, dtype)
        return (pred, target), {}
    return make


_GMM = dict(means=[-1.0, 0.5, 2.0], variances=[0.5, 1.0, 0.25], weights=[0.3, 0.5, 0.2])
_BINS = dict(bin_centers=[-1.5, -0.5, 0.5, 1.5], bin_weights=[0.1, 0.4, 0.4, 0.1])

SPECS = {
    "l1": LossSpec(make=_pair(3), functional=TF.l1_loss),
    "mse": LossSpec(make=_pair(3), functional=TF.mse_loss),
    "smooth_l1": LossSpec(make=_pair(3), functional=TF.smooth_l1_loss, module_kwargs=dict(beta=0.5),
                          functional_kwargs=dict(beta=0.5)),
    "bmc": LossSpec(make=_pair(1), functional=TF.bmc_loss, functional_kwargs=dict(noise_sigma=1.0),
                    pairwise=True, min_batch=2, empty_batch=False),
    "balanced_l1": LossSpec(make=_pair(2), functional=TF.balanced_l1_loss,
                            functional_kwargs=dict(noise_scale=1.0), pairwise=True, min_batch=2,
                            empty_batch=False),
    "gai": LossSpec(make=_pair(1), functional=TF.gai_loss, module_kwargs=dict(_GMM),
                    functional_kwargs=dict(noise_sigma=1.0, **_GMM)),
    "bni": LossSpec(make=_pair(1), functional=TF.bni_loss, module_kwargs=dict(_BINS),
                    functional_kwargs=dict(noise_sigma=1.0, **_BINS)),
}
