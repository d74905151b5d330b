"""Registry of loss modules: ``build_loss(name, **kwargs)`` and ``list_losses()``.

Each module class registers itself with :func:`register_loss` under one short snake_case name::

    @register_loss("giou")
    class GIoULoss(nn.Module): ...

Names are unique: registering a second class under a taken name raises, so two families can
never silently shadow each other.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, List, Type

from torch import nn

__all__ = ["register_loss", "build_loss", "list_losses", "get_loss_class", "describe_losses"]

_REGISTRY: Dict[str, Type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    """Class decorator that registers an ``nn.Module`` loss under ``name``."""
    if not isinstance(name, str) or not name or name != name.lower() or " " in name:
        raise ValueError(f"registry name must be a non-empty snake_case string, got {name!r}")

    def decorator(cls: Type[nn.Module]) -> Type[nn.Module]:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_loss({name!r}) decorates nn.Module subclasses, got {cls!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"loss name {name!r} is already registered to {existing.__module__}."
                             f"{existing.__qualname__}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def get_loss_class(name: str) -> Type[nn.Module]:
    """Return the module class registered under ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown loss {name!r}{hint} Registered losses: {', '.join(list_losses())}") from None


def build_loss(name: str, **kwargs) -> nn.Module:
    """Instantiate the loss registered under ``name`` with ``kwargs``.

    Example:
        >>> import tailwise
        >>> loss = tailwise.build_loss("mse", reduction="sum")
    """
    return get_loss_class(name)(**kwargs)


def list_losses() -> List[str]:
    """Sorted registry names."""
    return sorted(_REGISTRY)


def describe_losses() -> Dict[str, str]:
    """Map each registry name to the first line of its class docstring."""
    out = {}
    for name in list_losses():
        doc = (_REGISTRY[name].__doc__ or "").strip().splitlines()
        out[name] = doc[0].strip() if doc else _REGISTRY[name].__name__
    return out
