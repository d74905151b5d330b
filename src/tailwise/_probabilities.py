"""Range checks of probability-valued tensors (KL targets, soft labels, ``from_logits=False`` inputs).

The policy (docs/conventions.md, "Probability-valued inputs"): values must lie in ``[0, 1]``
(log-probabilities in ``[-inf, 0]``). On eager CPU tensors and in ``validation("full")`` a value
outside raises the exact ``ValueError`` naming the argument and the first bad value; on CUDA and
while ``torch.compile`` traces the same condition is a device-side assert (no host sync). A NaN
counts as out of range for data (targets) and passes for model outputs (``allow_nan=True``),
where the NaN propagates to the loss like any NaN model output.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import assert_values, host_value_checks

__all__ = ["check_probabilities"]


def _in_range(t: Tensor, log: bool, allow_nan: bool) -> Tensor:
    ok = t <= 0 if log else (t >= 0) & (t <= 1)
    return ok | torch.isnan(t) if allow_nan else ok


def _extremes(t: Tensor, log: bool):
    """(min, max) in one read pass (min is None for log-probabilities, which have no lower bound)."""
    if log:
        return None, t.amax()
    return torch.aminmax(t)


def check_probabilities(x: Tensor, name: str, *, log: bool = False, allow_nan: bool = False,
                        hint: str = "") -> Tensor:
    """Raise (or assert on device) unless every value of ``x`` is a probability (``log``: a log-probability).

    ``hint`` is appended to the message (e.g. how to pass logits instead). The test is one
    min/max reduction (NaN-propagating, so a NaN fails it unless ``allow_nan``); the element scan
    that names the first bad value runs only on the host and only when that test fails.
    """
    if x.numel() == 0:
        return x
    t = x.detach()
    interval = "[-inf, 0] (log-probabilities)" if log else "[0, 1]"
    lo, hi = _extremes(t, log)
    if not host_value_checks(t):
        ok = hi <= 0 if log else (lo >= 0) & (hi <= 1)
        if allow_nan:
            ok = ok | torch.isnan(hi) | (torch.isnan(lo) if lo is not None else False)
        assert_values(ok, f"{name} must hold values in {interval}{hint}")
        return x
    # comparisons with NaN are False: a NaN falls through to the scan
    if hi.item() <= 0 if log else (lo.item() >= 0 and hi.item() <= 1):
        return x
    bad = ~_in_range(t, log, allow_nan)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        where = idx[0] if len(idx) == 1 else idx
        raise ValueError(f"{name} must hold values in {interval}{hint}, got {t[idx].item()} at index {where}")
    return x
