"""``WarmupBlend``: train with one loss first, then blend linearly into another."""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor, nn

from .._reduction import rejects_weight
from ..registry import build_loss, register_loss

__all__ = ["WarmupBlend"]


def _accepted(module: nn.Module, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The subset of ``kwargs`` that ``module.forward`` accepts (all if it takes ``**kwargs``)."""
    if not kwargs:
        return kwargs
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


@register_loss("warmup_blend")
class WarmupBlend(nn.Module):
    r"""``first`` alone for ``warmup_steps`` steps, then a linear blend into ``second`` over ``blend_steps``.

    With ``t`` the step counter and ``lambda(t) = clip((t - W) / T, 0, 1)`` (a hard switch at
    ``W`` when ``T = 0``)::

        loss = (1 - lambda) * first(input, target) + lambda * second(input, target)

    Only the losses with non-zero weight are evaluated (a queued ranking loss is not touched,
    and its queue not filled, before the blend starts; see ``prefill``). Ranking surrogates
    such as Smooth-AP give weak gradients from a random initialisation, so a few epochs of BCE
    / focal first is the usual recipe.

    The counter is a buffer (``step_count``), so it is saved in ``state_dict`` and a resumed run
    continues the schedule. It is mirrored by a host integer (the schedule is driven from the
    host, so reading it never synchronises with the device); change it through :meth:`step` /
    :meth:`set_step` / ``load_state_dict``, not by writing the buffer. Under ``torch.compile``
    the graph depends only on the phase (warm-up, blend, done): the blend weight comes from the
    buffer, so stepping through the blend does not recompile (temperature annealing does, as the
    second loss's temperature is a Python number). Advance it with :meth:`step`, or call the Lightning-style hooks from
    the matching ``LightningModule`` hooks: :meth:`on_train_batch_end` steps when
    ``step_per="batch"`` (default), :meth:`on_train_epoch_end` when ``step_per="epoch"``.

    Optional temperature annealing (like the peer ``imbalanced-losses``' wrapper): with
    ``temperature_start``, ``temperature_end`` and ``temperature_steps``, ``second.temperature``
    follows ``start * (end / start) ** min(1, s / temperature_steps)`` with ``s`` the steps since
    the blend started.

    Args:
        first, second: loss modules (or registry names, built with ``first_kwargs`` /
            ``second_kwargs``; this is what makes ``build_loss("warmup_blend", first="sigmoid_focal",
            second="smooth_ap", ...)`` work).
        warmup_steps: ``W`` >= 0; blend_steps: ``T`` >= 0.
        step_per: ``"batch"`` or ``"epoch"``: which hook advances the counter.
        prefill: also run ``second`` under ``torch.no_grad()`` during warm-up so that its queue is
            already full when the blend starts (costs a forward of ``second``).

    Keyword arguments of ``forward`` are passed to each loss that accepts them.

    Example:
        >>> import torch, tailwise
        >>> loss_fn = tailwise.WarmupBlend(torch.nn.BCEWithLogitsLoss(), tailwise.SmoothAPLoss(),
        ...                                warmup_steps=2, blend_steps=2)
        >>> x, y = torch.randn(8, requires_grad=True), torch.tensor([1., 0, 0, 1, 0, 0, 0, 0])
        >>> for _ in range(5):
        ...     loss = loss_fn(x, y)
        ...     loss_fn.step()
        >>> loss_fn.blend_weight
        1.0
    """

    def __init__(self, first: Union[nn.Module, str], second: Union[nn.Module, str], warmup_steps: int = 0,
                 blend_steps: int = 0, *, step_per: str = "batch", prefill: bool = False,
                 first_kwargs: Optional[Dict[str, Any]] = None, second_kwargs: Optional[Dict[str, Any]] = None,
                 temperature_start: Optional[float] = None, temperature_end: Optional[float] = None,
                 temperature_steps: int = 0) -> None:
        super().__init__()
        self.first = build_loss(first, **(first_kwargs or {})) if isinstance(first, str) else first
        self.second = build_loss(second, **(second_kwargs or {})) if isinstance(second, str) else second
        for name, m in (("first", self.first), ("second", self.second)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{name} must be an nn.Module or a registry name, got {type(m).__name__}")
        for name, v in (("warmup_steps", warmup_steps), ("blend_steps", blend_steps),
                        ("temperature_steps", temperature_steps)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if step_per not in ("batch", "epoch"):
            raise ValueError(f"step_per must be 'batch' or 'epoch', got {step_per!r}")
        anneal = (temperature_start, temperature_end)
        if any(v is not None for v in anneal):
            if any(v is None or not v > 0 for v in anneal):
                raise ValueError("temperature_start and temperature_end must both be given and > 0, got "
                                 f"{temperature_start!r}, {temperature_end!r}")
            if not hasattr(self.second, "temperature"):
                raise ValueError(f"temperature annealing needs second to have a .temperature attribute; "
                                 f"{type(self.second).__name__} has none")
        self.warmup_steps, self.blend_steps, self.step_per = warmup_steps, blend_steps, step_per
        self.prefill = bool(prefill)
        self.temperature_start, self.temperature_end = temperature_start, temperature_end
        self.temperature_steps = temperature_steps
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self._sync_host(0)

    # -- schedule ----------------------------------------------------------------------------
    def _sync_host(self, t: int) -> None:
        self._t = int(t)
        lam = self.blend_weight
        self._phase = "warmup" if lam == 0.0 else ("done" if lam == 1.0 else "blend")

    @property
    def blend_weight(self) -> float:
        """``lambda``: the weight of ``second`` at the current step."""
        t = self._t
        if t < self.warmup_steps:
            return 0.0
        if self.blend_steps == 0:
            return 1.0
        return min(1.0, (t - self.warmup_steps) / self.blend_steps)

    @property
    def in_warmup(self) -> bool:
        return self.blend_weight == 0.0

    @property
    def current_temperature(self) -> Optional[float]:
        if self.temperature_start is None:
            return None
        done = max(0, self._t - self.warmup_steps)
        frac = 1.0 if self.temperature_steps == 0 else min(1.0, done / self.temperature_steps)
        return self.temperature_start * math.exp(frac * math.log(self.temperature_end / self.temperature_start))

    def _apply_temperature(self) -> None:
        t = self.current_temperature
        if t is not None:
            self.second.temperature = t

    @torch.no_grad()
    def step(self, n: int = 1) -> None:
        """Advance the schedule by ``n`` steps."""
        self.step_count += int(n)
        self._sync_host(self._t + int(n))
        self._apply_temperature()

    @torch.no_grad()
    def set_step(self, n: int) -> None:
        """Jump to step ``n`` (e.g. ``trainer.global_step``)."""
        self.step_count.fill_(int(n))
        self._sync_host(int(n))
        self._apply_temperature()

    def on_train_batch_end(self, *args, **kwargs) -> None:
        """Lightning-style hook: steps when ``step_per="batch"``."""
        if self.step_per == "batch":
            self.step()

    def on_train_epoch_end(self, *args, **kwargs) -> None:
        """Lightning-style hook: steps when ``step_per="epoch"``."""
        if self.step_per == "epoch":
            self.step()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._sync_host(int(self.step_count))  # one host read per load
        self._apply_temperature()

    # -- loss --------------------------------------------------------------------------------
    def _weights(self, like: Tensor):
        """``(1 - lambda, lambda)`` from the buffer, in float64 then cast (the values of the python floats)."""
        t = self.step_count.to(torch.float64)
        lam = ((t - self.warmup_steps) / self.blend_steps).clamp(0.0, 1.0)
        return (1.0 - lam).to(like.dtype), lam.to(like.dtype)

    @rejects_weight  # **kwargs would otherwise drop a bare weight= silently
    def forward(self, input: Tensor, target: Tensor, **kwargs) -> Tensor:
        phase = self._phase
        self._apply_temperature()
        if phase == "warmup":
            out = self.first(input, target, **_accepted(self.first, kwargs))
            if self.prefill and self.training:
                with torch.no_grad():
                    self.second(input.detach(), target, **_accepted(self.second, kwargs))
            return out
        if phase == "done":
            return self.second(input, target, **_accepted(self.second, kwargs))
        a = self.first(input, target, **_accepted(self.first, kwargs))
        b = self.second(input, target, **_accepted(self.second, kwargs))
        wa, wb = self._weights(a)
        return wa * a + wb * b

    def extra_repr(self) -> str:
        return (f"warmup_steps={self.warmup_steps}, blend_steps={self.blend_steps}, step_per={self.step_per!r}, "
                f"step={self._t}")
