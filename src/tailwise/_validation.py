"""Input validation shared by every loss family.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong
shape, range or value) with a message that names the argument, says what was expected and
what was received, so a user can fix the call without reading tailwise's source.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "check_tensor",
    "check_floating",
    "check_same_shape",
    "check_finite",
    "check_reduction",
    "check_positive",
    "check_nonnegative",
    "check_probability",
    "check_choice",
    "check_class_counts",
    "check_class_indices",
    "check_weight",
    "validation",
    "validation_mode",
    "host_value_checks",
    "host_selection",
    "assert_values",
]

_VALIDATE_ENV = "TAILWISE_VALIDATE"
_VALIDATION_MODES = ("default", "full")
_MODE: dict = {"value": None, "device_paths": False}


def validation_mode() -> str:
    """``"default"`` or ``"full"``: :func:`validation`'s, else ``$TAILWISE_VALIDATE``, else default."""
    mode = _MODE["value"] or os.environ.get(_VALIDATE_ENV, "default").strip().lower() or "default"
    if mode not in _VALIDATION_MODES:
        raise ValueError(f"{_VALIDATE_ENV} must be one of {_VALIDATION_MODES}, got {mode!r}")
    return mode


@contextlib.contextmanager
def validation(mode: str = "full") -> Iterator[None]:
    """Choose how value checks run inside the block.

    ``"default"``: metadata checks always; value checks (target range, unit norm, positive
    counts, inverted boxes, ...) read values on the host only for eager CPU tensors, and become
    device-side asserts (no host synchronisation) on CUDA and while ``torch.compile`` traces.
    ``"full"``: every value check reads values on the host and raises the exact ``ValueError``,
    on any device (it synchronises; for debugging).

    Example:
        >>> import tailwise
        >>> with tailwise.validation("full"):
        ...     pass
    """
    if mode not in _VALIDATION_MODES:
        raise ValueError(f"mode must be one of {_VALIDATION_MODES}, got {mode!r}")
    old = _MODE["value"]
    _MODE["value"] = mode
    try:
        yield
    finally:
        _MODE["value"] = old


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)


def _compiling() -> bool:
    return bool(_is_compiling())


def host_value_checks(*tensors) -> bool:
    """True where a value check may read tensor values on the host (exact ``ValueError``).

    That is: never while ``torch.compile`` traces; always in ``"full"`` validation mode; else
    only when no tensor argument lives on an accelerator.
    """
    if _compiling():
        return False
    # eager CPU tensors get the exact checks in every mode: decide that without reading the mode
    if not _MODE["device_paths"] and not any(isinstance(t, Tensor) and t.device.type != "cpu" for t in tensors):
        return True
    return validation_mode() == "full"


def host_selection(*tensors) -> bool:
    """True where data-dependent selection (boolean masks, ``nonzero``, ``unique``) may be used.

    That is eager mode with every tensor on the CPU, where it is the fastest form and costs no
    synchronisation; on accelerators, while ``torch.compile`` traces and under the testing switch
    :func:`_device_paths`, callers use their masked fixed-shape form. Unlike
    :func:`host_value_checks` it does not depend on the validation mode.
    """
    if _compiling() or _MODE["device_paths"]:
        return False
    return not any(isinstance(t, Tensor) and t.device.type != "cpu" for t in tensors)


@contextlib.contextmanager
def _device_paths() -> Iterator[None]:
    """Testing aid: take the accelerator code paths (device-side asserts, masking instead of
    selection) for CPU tensors too, so CI can check them without a GPU."""
    old = _MODE["device_paths"]
    _MODE["device_paths"] = True
    try:
        yield
    finally:
        _MODE["device_paths"] = old


def assert_values(ok: Tensor, message: str) -> None:
    """Device-side form of a value check: fail asynchronously unless every element of ``ok`` is true.

    No host synchronisation, and traceable by ``torch.compile(fullgraph=True)`` and CUDA graphs.
    """
    if ok.numel() != 1:
        ok = ok.all()
    torch._assert_async(ok.reshape(()), message)

_REDUCTIONS = ("mean", "sum", "none")


def _describe(x) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}" if not isinstance(x, (list, tuple)) else f"a {type(x).__name__} of length {len(x)}"


def check_tensor(x, name: str, *, ndim: Optional[Union[int, Sequence[int]]] = None,
                 min_ndim: Optional[int] = None, last_dim: Optional[int] = None) -> Tensor:
    """Raise unless ``x`` is a tensor with the requested number of dimensions."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_describe(x)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            expected = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {expected}, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if last_dim is not None and (x.dim() == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {tuple(x.shape)}")
    return x


def check_floating(x, name: str, **kwargs) -> Tensor:
    """Raise unless ``x`` is a floating-point tensor."""
    check_tensor(x, name, **kwargs)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the same shape as {name_a} {tuple(a.shape)}, got {tuple(b.shape)}")


def check_finite(x: Tensor, name: str) -> Tensor:
    """Raise ``ValueError`` if ``x`` has a NaN or an infinity, naming the first bad index.

    A value check: exact message for eager CPU tensors and in ``"full"`` validation mode, a
    device-side assert (no host synchronisation) on accelerators and while ``torch.compile``
    traces. Meant for data (labels, statistics); model outputs are not checked (their NaN/Inf
    propagate to a non-finite loss, as in torch).
    """
    if x.numel() == 0 or not (x.is_floating_point() or x.is_complex()):
        return x
    if not host_value_checks(x):
        assert_values(torch.isfinite(x.detach()).all(), f"{name} must be finite")
        return x
    # fast path: min/max propagate NaN and expose +-inf; two reductions without allocating the
    # boolean mask that isfinite().all() needs (20x faster on 1M elements)
    if x.is_complex():
        if bool(torch.isfinite(x.detach()).all()):
            return x
    else:
        lo, hi = torch.aminmax(x.detach())
        if math.isfinite(lo.item()) and math.isfinite(hi.item()):
            return x
    bad = ~torch.isfinite(x.detach())
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        first = idx[0] if len(idx) == 1 else idx
        raise ValueError(f"{name} must be finite, got {x.detach()[idx].item()} at index {first}")
    return x


def check_reduction(reduction) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
            isinstance(value, Tensor) and value.numel() == 1):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    return v


def check_positive(value, name: str) -> float:
    v = _check_number(value, name)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def check_nonnegative(value, name: str) -> float:
    v = _check_number(value, name)
    if not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def check_probability(value, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    """Raise unless ``value`` lies in [0, 1] (ends optionally excluded)."""
    v = _check_number(value, name)
    lo_ok = v > 0 if open_low else v >= 0
    hi_ok = v < 1 if open_high else v <= 1
    if not (lo_ok and hi_ok):
        interval = ("(" if open_low else "[") + "0, 1" + (")" if open_high else "]")
        raise ValueError(f"{name} must be in {interval}, got {v}")
    return v


def check_choice(value, name: str, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


_COUNTS_CACHE: "dict" = {}
_COUNTS_CACHE_SIZE = 64


def _counts_key(obj, device, tag):
    """A cache key for per-class data: sequences and numpy arrays by content, tensors by identity."""
    if isinstance(obj, Tensor):
        # identity plus version counter: an in-place update of the user's tensor (an optimiser
        # step, load_state_dict's copy_) is a new key. Inference tensors have no version counter,
        # and subclasses (fake or distributed tensors) may not own their data: not cached.
        if type(obj) not in (Tensor, torch.nn.Parameter) or obj.is_inference():
            return None
        return ("tensor", id(obj), obj._version, str(device), tag)
    if isinstance(obj, (list, tuple)):
        try:
            key = ("seq", tuple(obj), str(device), tag)
            hash(key)
            return key
        except TypeError:
            return None
    tobytes = getattr(obj, "tobytes", None)
    if tobytes is not None and hasattr(obj, "dtype") and hasattr(obj, "shape"):
        return ("array", str(obj.dtype), tuple(obj.shape), tobytes(), str(device), tag)
    return None


def check_class_counts(class_counts, num_classes: Optional[int] = None, *, name: str = "class_counts",
                       allow_zero: bool = False, device=None) -> Tensor:
    """Validate per-class training counts and return them as a float64 1-D tensor on ``device``.

    Accepts a tensor, a numpy array or a sequence. Counts must be finite, non-negative, positive
    unless ``allow_zero`` (a zero count makes ``log pi_c = -inf``), and of length ``num_classes``
    when given.

    Host data (a sequence, an array, or a tensor on another device than ``device``) is validated
    on the host and converted once per device: the result is cached (keyed by the content, or a
    tensor's identity and version, and the device), so a functional loss called every step with
    the same ``class_counts`` list makes no host->device copy after the first call. A tensor
    already on ``device`` (a module's buffer) is validated where it lives, with checks that follow
    :func:`host_value_checks` (exact ``ValueError`` on eager CPU, device-side asserts on CUDA and
    while compiling), once per (tensor, version): a module's buffer costs no op per call after
    its first (an in-place update makes a new version and is checked again). While
    ``torch.compile`` traces nothing is cached.
    """
    if device is not None:
        device = torch.device(device)
    on_device = isinstance(class_counts, Tensor) and (device is None or class_counts.device == device)
    if _compiling():
        if not isinstance(class_counts, Tensor):
            # traced: the sequence is a compile-time constant of the graph
            class_counts = torch.as_tensor(class_counts, dtype=torch.float64, device=device)
        return _validated_counts(class_counts, num_classes, name, allow_zero, device)
    if device is None:
        # no device asked for: a module's constructor (it registers the result as a buffer that
        # load_state_dict overwrites in place) or a weight helper. A private tensor, never one
        # shared through the cache (a tensor argument is converted as before: possibly its alias)
        if on_device:
            return _validated_counts(class_counts, num_classes, name, allow_zero, None)
        return cached_on_device(class_counts, None, ("counts", num_classes, allow_zero, name),
                                lambda c: _validated_counts(c, num_classes, name, allow_zero, None)).clone()
    if on_device:
        return cached_on_device(class_counts, device, ("counts", num_classes, allow_zero, name),
                                lambda c: _validated_counts(c, num_classes, name, allow_zero, device))
    return cached_on_device(class_counts, device, ("counts", num_classes, allow_zero, name),
                            lambda c: _validated_counts(c, num_classes, name, allow_zero, None))


def cached_on_device(obj, device, tag, build) -> Tensor:
    """``build(obj)`` (host-side validation and conversion, returning a CPU tensor) moved to
    ``device``, computed once per (content of ``obj``, ``device``, ``tag``) and cached.

    ``obj`` is a sequence, a numpy array or a tensor (keyed by identity and version counter; a
    tensor may already live on ``device``, then ``build`` runs there); an unhashable ``obj`` is
    simply not cached. Callers must not modify the returned tensor. Not for use while
    ``torch.compile`` traces (callers build directly then).
    """
    key = _counts_key(obj, device, tag)
    hit = _COUNTS_CACHE.get(key) if key is not None else None
    if hit is not None and (hit[0] is None or hit[0]() is obj):
        return hit[1]
    out = build(obj)
    if device is not None:
        out = out.to(device=device)
    if key is not None:
        ref = None
        if isinstance(obj, Tensor):
            ref = weakref.ref(obj)
            _track_tensor_entry(obj, key)
        if len(_COUNTS_CACHE) >= _COUNTS_CACHE_SIZE:
            _COUNTS_CACHE.pop(next(iter(_COUNTS_CACHE)))
        _COUNTS_CACHE[key] = (ref, out)
    return out


# id(tensor) -> {(device, tag): key of its cached entry}. A tensor keeps one entry per device and
# tag: a buffer updated every step (a new version each time) replaces its entry instead of
# filling the cache and pushing out the cached host data (whose rebuild would copy host data to
# the device again); and its entries leave with it (a tensor made afresh for every call, e.g. a
# 0-d alpha expanded to (C,), leaves nothing behind). One finalizer per tensor.
_TENSOR_ENTRIES: "dict" = {}


def _track_tensor_entry(obj: Tensor, key) -> None:
    tid = id(obj)
    slot = _TENSOR_ENTRIES.get(tid)
    if slot is None:
        slot = _TENSOR_ENTRIES[tid] = {}
        weakref.finalize(obj, _drop_tensor_entries, tid)
    old = slot.get(key[3:])
    if old is not None and old != key:
        _COUNTS_CACHE.pop(old, None)
    slot[key[3:]] = key


def _drop_tensor_entries(tid: int) -> None:
    for key in _TENSOR_ENTRIES.pop(tid, {}).values():
        _COUNTS_CACHE.pop(key, None)


def _validated_counts(class_counts, num_classes, name, allow_zero, device) -> Tensor:
    if isinstance(class_counts, Tensor):
        counts = class_counts.detach()
    else:
        try:
            counts = torch.as_tensor(class_counts)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a 1-D tensor or sequence of per-class counts, "
                            f"got {_describe(class_counts)}") from exc
    if counts.dtype == torch.bool or counts.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {counts.dtype}")
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of per-class counts, "
                         f"got shape {tuple(counts.shape)}")
    counts = counts.to(dtype=torch.float64, device=device)
    if num_classes is not None and counts.numel() != num_classes:
        raise ValueError(f"{name} must have one entry per class ({num_classes}), got {counts.numel()}")
    if not host_value_checks(counts):
        ok = torch.isfinite(counts) & ((counts >= 0) if allow_zero else (counts > 0))
        assert_values(ok.all() & (counts.sum() > 0), f"{name} must be finite and "
                      f"{'non-negative' if allow_zero else 'positive'}, and not all zero")
        return counts
    check_finite(counts, name)
    if bool((counts < 0).any()):
        i = int((counts < 0).nonzero()[0])
        raise ValueError(f"{name} must be non-negative, got {counts[i].item()} for class {i}")
    if not allow_zero and bool((counts == 0).any()):
        i = int((counts == 0).nonzero()[0])
        raise ValueError(f"{name} must be positive (a class with no training samples has prior 0 and "
                         f"log-prior -inf), got 0 for class {i}")
    if bool(counts.sum() <= 0):
        raise ValueError(f"{name} must not be all zero")
    return counts


def check_class_indices(target, num_classes: int, name: str = "target", *,
                        ignore_index: Optional[int] = None, values: bool = True) -> Tensor:
    """Raise unless ``target`` holds integer class indices in ``[0, num_classes)`` (or ``ignore_index``).

    The range is a value check (see :func:`host_value_checks`): exact message on eager CPU and in
    ``"full"`` mode, a device-side assert on accelerators and while compiling. ``values=False``
    checks the type only (for callers whose kernel checks the range as it reads the targets).
    """
    check_tensor(target, name)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices (int64), got dtype {target.dtype}")
    if target.numel() == 0 or not values:
        return target
    t = target.detach()
    extra = "" if ignore_index is None else f" (or ignore_index={ignore_index})"
    if not host_value_checks(t):
        bad = (t < 0) | (t >= num_classes)
        if ignore_index is not None:
            bad = bad & (t != ignore_index)
        assert_values(~bad.any(), f"{name} must be class indices in [0, {num_classes - 1}]{extra}")
        return target
    valid = t if ignore_index is None else t[t != ignore_index]
    if valid.numel() and (bool((valid < 0).any()) or bool((valid >= num_classes).any())):
        bad = valid[(valid < 0) | (valid >= num_classes)][0].item()
        raise ValueError(f"{name} must be class indices in [0, {num_classes - 1}]{extra}, got {bad}")
    return target


def check_weight(weight, loss_shape: torch.Size, name: str = "weight") -> Optional[Tensor]:
    """Raise unless ``weight`` is None or a floating tensor broadcastable to ``loss_shape``."""
    if weight is None:
        return None
    check_floating(weight, name)
    try:
        shape = torch.broadcast_shapes(weight.shape, loss_shape)
    except RuntimeError:
        shape = None
    if shape != torch.Size(loss_shape):
        raise ValueError(f"{name} must be broadcastable to the unreduced loss shape {tuple(loss_shape)}, "
                         f"got shape {tuple(weight.shape)}")
    return weight
