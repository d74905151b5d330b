"""The classification comparison grid: losses with arguments, samplers, post-hoc adjustment.

A *configuration* is one row of the report: a loss (registry name plus keyword arguments, written
``name:key=value:key=value`` on the command line, e.g. ``logit_adjusted:tau=2``), the training
sampler (``none`` = plain shuffling, or one of :data:`SAMPLERS`) and the test-time transform
(``none``, or ``adjust``: :func:`tailwise.adjust_logits` on a cross-entropy model, its ``tau``
tuned on a held-out split of the training data).

Before anything trains, every loss is *probed*: built with long-tailed class counts and called
on random logits. A loss that cannot take logits ``(N, C)`` and class labels (``giou``,
``supcon`` ...) is a one-line user error, and two losses that give the same values and gradients
on every probe batch (``logit_adjusted`` at its default ``tau=1`` *is* ``balanced_softmax``) are
merged into one row that names both, so no row is decided by list order.
"""

from __future__ import annotations

import inspect
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .task import BenchInputError

__all__ = ["SAMPLERS", "POST_HOC", "parse_loss", "loss_label", "build_classification_loss",
           "probe_loss", "identical_groups", "config_label"]

SAMPLERS = ("none", "class_balanced", "sqrt", "progressive")
POST_HOC = ("none", "adjust")
_PROBE_COUNTS = (500, 200, 80, 30, 12, 5, 2)


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_loss(item: str) -> Tuple[str, Dict[str, object]]:
    """``"logit_adjusted:tau=2"`` -> ``("logit_adjusted", {"tau": 2})``."""
    name, *parts = [p.strip() for p in item.split(":")]
    kwargs: Dict[str, object] = {}
    for part in parts:
        if "=" not in part or not part.split("=", 1)[0].strip():
            raise BenchInputError(f"--losses item {item!r}: arguments are written name:key=value "
                                  "(e.g. logit_adjusted:tau=2)")
        key, text = part.split("=", 1)
        kwargs[key.strip()] = _value(text.strip())
    return name, kwargs


def loss_label(name: str, kwargs: Dict[str, object]) -> str:
    """``logit_adjusted(tau=2)``; the bare name without arguments."""
    if not kwargs:
        return name
    return f"{name}(" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in sorted(kwargs.items())) + ")"


def config_label(loss: str, sampler: str = "none", post_hoc: str = "none") -> str:
    label = loss
    if sampler != "none":
        label += f" + {sampler} sampler"
    if post_hoc == "adjust":
        label += " + post-hoc adjust"
    return label


def build_classification_loss(name: str, class_counts, num_classes: int,
                              kwargs: Optional[Dict[str, object]] = None) -> nn.Module:
    """Build a registered loss, passing ``class_counts`` / ``num_classes`` where it takes them."""
    from ..registry import get_loss_class

    cls = get_loss_class(name)
    params = inspect.signature(cls.__init__).parameters
    kw = dict(kwargs or {})
    unknown = [k for k in kw if k not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values())]
    if unknown:
        takes = [p for p in params if p not in ("self", "class_counts", "num_classes")
                 and params[p].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        raise BenchInputError(f"loss {name!r} has no argument {unknown[0]!r} (it takes: "
                              f"{', '.join(takes) or 'no arguments'})")
    if "class_counts" in params:
        kw.setdefault("class_counts", class_counts)
    if "num_classes" in params:
        kw.setdefault("num_classes", num_classes)
    try:
        return cls(**kw)
    except (TypeError, ValueError) as exc:
        raise BenchInputError(f"loss {loss_label(name, kwargs or {})} cannot be built for classification "
                              f"({str(exc).splitlines()[0]})") from None


def _probe_batches(num_classes: int, n: int = 3):
    gen = torch.Generator().manual_seed(1234)
    for _ in range(n):
        logits = 3.0 * torch.randn(16, num_classes, generator=gen, dtype=torch.float64)
        target = torch.randint(0, num_classes, (16,), generator=gen)
        yield logits, target


def probe_loss(name: str, kwargs: Dict[str, object]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Build and call the loss on probe batches; returns ``(value, grad)`` per batch.

    Raises :class:`BenchInputError` (one line) when the loss is unknown, takes an argument it
    does not have, or cannot score class logits against labels.
    """
    from ..registry import list_losses

    if name not in list_losses():
        raise BenchInputError(f"unknown loss {name}; `tailwise list` shows the registered names")
    counts = torch.tensor(_PROBE_COUNTS)
    loss = build_classification_loss(name, counts, len(_PROBE_COUNTS), kwargs).double()
    loss.train()
    out = []
    try:
        for logits, target in _probe_batches(len(_PROBE_COUNTS)):
            logits = logits.clone().requires_grad_(True)
            value = loss(logits, target)
            if value.dim() != 0:
                raise ValueError(f"returned shape {tuple(value.shape)}, not a scalar")
            (grad,) = torch.autograd.grad(value, logits)
            transform = getattr(loss, "inference_logits", None)
            scores = transform(logits.detach()) if callable(transform) else logits.detach()
            out.append((value.detach(), grad, scores))
    except Exception as exc:  # any failure means: not a classification loss with these arguments
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchInputError(f"{loss_label(name, kwargs)} is not a classification loss (it cannot score "
                              f"logits (N, C) against class labels: {first}); the classification task "
                              f"takes e.g. cross_entropy, focal, balanced_softmax, logit_adjusted") from None
    return out


def identical_groups(losses: Sequence[Tuple[str, Dict[str, object]]]) -> List[List[int]]:
    """Group the indices of ``losses`` whose probes agree (values, gradients, test-time scores)
    to 1e-9 relative: mathematically the same training objective, so one run serves them all."""
    probes = [probe_loss(n, kw) for n, kw in losses]
    groups: List[List[int]] = []
    for i, p in enumerate(probes):
        for g in groups:
            q = probes[g[0]]
            if all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for pa, pb in zip(p, q) for a, b in zip(pa, pb)):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups
