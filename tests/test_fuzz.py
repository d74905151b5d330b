"""Property-based fuzzing of every registry loss from its declared sample inputs.

For each name in ``tailwise.list_losses()`` the inputs come from its :class:`LossSpec` (the
per-family ``tests/specs`` modules, else the temporary ``tests/specs/_fuzz_fallback.py``).
Hypothesis then varies them and checks:

* valid inputs (any batch size the spec allows, the empty batch, float32/float64, non-contiguous
  views, every class absent but one, bf16 autocast) give a finite loss and finite gradients;
* huge logits (1e30 .. 3e38) never give NaN, and bounded losses stay finite;
* a NaN or +Inf in a model output gives a non-finite loss or a ValueError, never a finite loss;
* invalid inputs (non-finite or wrong-shape targets, integer model outputs, Python lists,
  out-of-range class indices, bad class_counts, inverted boxes, targets that require grad) raise
  ValueError/TypeError whose message names an argument (never IndexError, RuntimeError,
  AssertionError, AttributeError), or, where accepted, behave correctly.

CI uses the "fuzz" Hypothesis profile (derandomized, few examples per loss and property; see
conftest.py); ``HYPOTHESIS_PROFILE=long`` runs many random examples.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tailwise
from tailwise.registry import get_loss_class
from specs import all_specs
from specs._fuzz_fallback import SPECS as FALLBACK_SPECS

FUZZ = settings(settings.get_profile("long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "fuzz"))
CPU = torch.device("cpu")
NAMES = tailwise.list_losses()


def _specs():
    specs = dict(FALLBACK_SPECS)
    specs.update(all_specs())  # the family modules win over the fallback
    return specs


SPECS = _specs()

# losses whose first argument is logits / scores, so scaling it to ~1e38 is a valid input
LOGITS_FIRST = {
    "cross_entropy", "focal", "balanced_softmax", "logit_adjusted", "class_balanced", "iif", "bal_bce",
    "eqlv2", "equalized_focal", "difficulty", "softmax_eql", "kl_div", "entropy", "sigmoid_focal", "tade",
    "warmup_blend", "dice", "dice_ce", "tversky", "focal_tversky", "smooth_ap", "recall_at_quantile",
    "pauc_at_budget",
}
# values bounded whatever the logits (entropy <= log C, overlap and ranking losses in [0, 1])
BOUNDED = {"entropy", "dice", "tversky", "focal_tversky", "smooth_ap", "recall_at_quantile", "pauc_at_budget"}
# labels compared only for equality (any integer is a valid label)
FREE_LABELS = {"supcon", "ntxent"}
# non-grad float arguments that are another network's output rather than data (BYOL's target
# branch): a NaN there may propagate instead of raising
MODEL_TARGETS = {"byol": {"target"}, "cp2": {"k_dense"}, "propos": {"k"}, "info_nce": {"queue"}}
# documented stop-gradients inside the formula (as the official code): the gradient is not the
# derivative of the value, so the finite-difference comparison does not apply
DETACHED_TERMS = {"ciou": "the aspect-ratio trade-off alpha", "focal_eiou": "the IoU^gamma weight",
                  "wiou": "the enclosing box size W_g, H_g (and the v3 focusing factor)"}
BOX_LOSSES = {"iou", "giou", "diou", "ciou", "eiou", "focal_eiou", "cdiou"}

ALLOWED_ERRORS = (ValueError, TypeError)


# ---------------------------------------------------------------------------------------------- plumbing

def _map(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn) for o in obj)
    return obj


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _model_outputs(args):
    return [t for t in _tensors(args) if t.is_floating_point() and t.requires_grad]


def _build(name, spec, reduction=None, **override):
    kwargs = {**spec.module_kwargs, **override}
    if reduction is not None and "reduction" in inspect.signature(get_loss_class(name).__init__).parameters:
        kwargs["reduction"] = reduction
    return tailwise.build_loss(name, **kwargs)


def _call(module, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-time "class skipped" warnings of the ranking losses
        return module(*args, **kwargs)


def _param_names(module):
    return [p for p in inspect.signature(module.forward).parameters if p not in ("self", "kwargs")]


def _make(spec, n, dtype, seed):
    return spec.make(n, CPU, dtype, torch.Generator().manual_seed(seed))


def _sizes(spec):
    sizes = [spec.min_batch, spec.min_batch + 1, max(spec.min_batch, 5)]
    return ([0] if spec.empty_batch else []) + sizes


def _noncontig(t):
    view = torch.stack([t.detach(), t.detach()], -1)[..., 0] if t.dim() else t.detach().clone()
    return view.requires_grad_(t.requires_grad)


def _backward_grads(loss, args, module):
    """Backpropagate ``loss.sum()``; return the gradients of the model outputs and parameters."""
    leaves = _model_outputs(args) + [p for p in module.parameters() if p.requires_grad]
    if not loss.requires_grad:
        return []
    grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
    return [g for g in grads if g is not None]


def _raises_named(fn, names):
    """Run ``fn``; if it raises it must be ValueError/TypeError naming one of ``names``. Returns the
    result or None."""
    try:
        return fn()
    except ALLOWED_ERRORS as exc:
        msg = str(exc)
        assert any(n in msg for n in names), f"{type(exc).__name__} does not name any of {names}: {msg}"
        return None
    except Exception as exc:  # noqa: BLE001 - the point is to catch the wrong kinds
        pytest.fail(f"raised {type(exc).__name__} instead of ValueError/TypeError: {exc}")


def test_every_registry_loss_has_a_spec():
    assert sorted(set(NAMES) - set(SPECS)) == []


# ---------------------------------------------------------------------------------------------- valid inputs

@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_valid_inputs_give_finite_loss_and_grads(name, data):
    spec = SPECS[name]
    n = data.draw(st.sampled_from(_sizes(spec)), label="n")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    # reductions=() declares a module without a reduction argument (its own fixed reduction)
    reduction = data.draw(st.sampled_from(spec.reductions), label="reduction") if spec.reductions else None
    noncontig = data.draw(st.booleans(), label="non-contiguous")
    one_class = data.draw(st.booleans(), label="all labels 0 (absent classes)")
    autocast = spec.bf16 and dtype == torch.float32 and data.draw(st.booleans(), label="bf16 autocast")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    boxes = data.draw(st.sampled_from(["plain", "zero_area", "identical", "huge"]), label="boxes") \
        if name in BOX_LOSSES else "plain"
    args, kwargs = _make(spec, n, dtype, seed)
    if one_class:
        args = _map(args, lambda t: torch.zeros_like(t) if not t.is_floating_point() else t)
    if boxes != "plain":
        args = _box_variant(args, boxes)
    if noncontig:
        args = _map(args, _noncontig)
    module = _build(name, spec, reduction).to(dtype)
    faces = [lambda: _call(module, args, kwargs)]
    if spec.functional is not None:
        fkw = dict(kwargs, **spec.functional_kwargs)
        if reduction is not None and "reduction" in inspect.signature(spec.functional).parameters:
            fkw["reduction"] = reduction
        faces.append(lambda: _call(spec.functional, args, fkw))
    for face in faces:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = face()
        assert isinstance(loss, torch.Tensor)
        assert torch.isfinite(loss).all(), f"non-finite loss {loss} for valid inputs"
        if autocast:
            assert loss.dtype == torch.float32
        if n == 0 and reduction != "none":
            assert loss.item() == 0.0
        for g in _backward_grads(loss, args, module):
            assert torch.isfinite(g).all(), "non-finite gradient for valid inputs"


def _box_variant(args, how):
    """Degenerate but valid boxes: zero width/height, pred == target, or coordinates ~1e15
    (areas ~1e30, still inside float32; beyond ~1e19 the areas themselves overflow float32)."""
    pred, target = args[0].detach().clone(), args[1].clone()
    if how == "zero_area":
        target[::2, 2] = target[::2, 0]
        pred[1::2, 3] = pred[1::2, 1]
    elif how == "identical":
        pred = target.clone()
    else:
        pred, target = pred * 1e15, target * 1e15
    return (pred.requires_grad_(), target) + tuple(args[2:])


@pytest.mark.parametrize("name", sorted(LOGITS_FIRST & set(NAMES)))
@FUZZ
@given(data=st.data())
def test_huge_logits_never_nan(name, data):
    spec = SPECS[name]
    n = data.draw(st.sampled_from([max(spec.min_batch, 1), max(spec.min_batch, 6)]), label="n")
    scale = data.draw(st.floats(1e30, 3e38), label="scale")
    pattern = data.draw(st.sampled_from(["randn", "constant", "sign"]), label="pattern")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    args, kwargs = _make(spec, n, torch.float32, seed)
    big = torch.finfo(torch.float32).max
    first = _tensors(args[0])

    def huge(t):
        if not any(t is f for f in first):
            return t
        x = t.detach()
        if pattern == "randn":
            x = (x * scale).clamp(-big, big)
        elif pattern == "constant":
            x = torch.full_like(x, scale)
        else:
            x = torch.where(x > 0, scale, -scale).to(x.dtype)
        return x.requires_grad_()

    args = _map(args, huge)
    module = _build(name, spec)
    loss = _call(module, args, kwargs)
    assert not torch.isnan(loss).any(), f"NaN loss at logits ~{scale:.3g} ({pattern})"
    if name in BOUNDED:
        assert torch.isfinite(loss).all(), f"bounded loss not finite at logits ~{scale:.3g}"
    for g in _backward_grads(loss, args, module):
        assert not torch.isnan(g).any(), f"NaN gradient at logits ~{scale:.3g} ({pattern})"


# ---------------------------------------------------------------------------------------------- non-finite model outputs

@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_nonfinite_model_output_is_never_hidden(name, data):
    spec = SPECS[name]
    n = data.draw(st.sampled_from([max(spec.min_batch, 2), max(spec.min_batch, 5)]), label="n")
    bad = data.draw(st.sampled_from([math.nan, math.inf]), label="value")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    args, kwargs = _make(spec, n, torch.float32, seed)
    outputs = [t for t in _model_outputs(args) if t.numel()]
    if not outputs:
        return
    victim = outputs[data.draw(st.integers(0, len(outputs) - 1), label="which output")]
    pos = data.draw(st.integers(0, victim.numel() - 1), label="position")

    def poison(t):
        if t is not victim:
            return t
        x = t.detach().clone()
        x.view(-1)[pos] = bad
        return x.requires_grad_()

    args = _map(args, poison)
    module = _build(name, spec)
    loss = _raises_named(lambda: _call(module, args, kwargs), _param_names(module))
    if loss is not None:
        assert not torch.isfinite(loss).all(), f"finite loss {loss} hides a {bad} model output"


# ---------------------------------------------------------------------------------------------- invalid inputs

def _data_args(args, module, name):
    """(position, name, tensor) of the non-grad tensor arguments (targets, labels)."""
    names = _param_names(module)
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and not a.requires_grad:
            out.append((i, names[i], a))
    return out


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_nonfinite_target_raises(name, data):
    spec = SPECS[name]
    n = max(spec.min_batch, 3)
    args, kwargs = _make(spec, n, torch.float32, data.draw(st.integers(0, 2**16), label="seed"))
    module = _build(name, spec)
    floats = [(i, p, t) for i, p, t in _data_args(args, module, name) if t.is_floating_point() and t.numel()]
    if not floats:
        return
    i, pname, t = floats[data.draw(st.integers(0, len(floats) - 1), label="which target")]
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label="value")
    x = t.clone()
    x.view(-1)[data.draw(st.integers(0, x.numel() - 1), label="position")] = bad
    args = list(args)
    args[i] = x
    loss = _raises_named(lambda: _call(module, args, kwargs), [pname])
    if loss is not None:
        assert pname in MODEL_TARGETS.get(name, ()), f"{pname}={bad} accepted"
        assert not torch.isfinite(loss).all(), f"finite loss hides {pname}={bad}"


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_wrong_shape_raises_naming_an_argument(name, data):
    spec = SPECS[name]
    n = max(spec.min_batch, 3)
    args, kwargs = _make(spec, n, torch.float32, data.draw(st.integers(0, 2**16), label="seed"))
    module = _build(name, spec)
    names = _param_names(module)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    i = data.draw(st.sampled_from(tensors), label="argument")
    how = data.draw(st.sampled_from(["drop_row", "drop_dim", "add_dim"]), label="how")
    a = args[i]
    if how == "drop_row":
        b = a[:-1]
    elif how == "drop_dim":
        b = a[..., 0] if a.dim() else a.reshape(1)
    else:
        b = a.unsqueeze(-1).expand(*a.shape, 2)
    if a.requires_grad:
        b = b.detach().clone().requires_grad_()
    args = list(args)
    args[i] = b

    def run():
        return _call(module, args, kwargs)

    try:
        loss = run()
    except ALLOWED_ERRORS as exc:
        assert any(p in str(exc) for p in names), f"message names no argument of {names}: {exc}"
        return
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{how} of {names[i]} raised {type(exc).__name__}: {exc}")
    # accepted: only legitimate where the new shape is itself a valid input (e.g. fewer views)
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_integer_model_output_raises(name, data):
    spec = SPECS[name]
    args, kwargs = _make(spec, max(spec.min_batch, 3), torch.float32, data.draw(st.integers(0, 2**16)))
    module = _build(name, spec)
    outputs = _model_outputs(args)
    if not outputs:
        return
    victim = outputs[data.draw(st.integers(0, len(outputs) - 1), label="which output")]
    args = _map(args, lambda t: t.detach().round().long() if t is victim else t)
    with pytest.raises(ALLOWED_ERRORS) as info:
        _call(module, args, kwargs)
    assert any(p in str(info.value) for p in _param_names(module) + ["dtype", "floating"]), str(info.value)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_python_list_arguments(name, data):
    spec = SPECS[name]
    args, kwargs = _make(spec, max(spec.min_batch, 3), torch.float32, data.draw(st.integers(0, 2**16)))
    module = _build(name, spec)
    names = _param_names(module)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    i = data.draw(st.sampled_from(tensors), label="argument")
    args = list(args)
    args[i] = args[i].tolist()
    loss = _raises_named(lambda: _call(module, args, kwargs), names)
    if loss is not None:  # accepted like a tensor
        assert torch.isfinite(loss).all()


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_out_of_range_class_indices_raise(name, data):
    spec = SPECS[name]
    if name in FREE_LABELS:
        return
    args, kwargs = _make(spec, max(spec.min_batch, 3), torch.float32, data.draw(st.integers(0, 2**16)))
    module = _build(name, spec)
    ints = [(i, p, t) for i, p, t in _data_args(args, module, name) if not t.is_floating_point() and t.numel()]
    if not ints:
        return
    i, pname, t = ints[data.draw(st.integers(0, len(ints) - 1), label="which labels")]
    value = data.draw(st.sampled_from([-7, 10**6]), label="value")
    x = t.clone()
    x.view(-1)[data.draw(st.integers(0, x.numel() - 1), label="position")] = value
    args = list(args)
    args[i] = x
    with pytest.raises(ALLOWED_ERRORS) as info:
        _call(module, args, kwargs)
    assert pname in str(info.value), str(info.value)


@pytest.mark.parametrize("name", sorted(n for n in NAMES if "class_counts" in SPECS[n].module_kwargs))
@FUZZ
@given(data=st.data())
def test_bad_class_counts_raise(name, data):
    spec = SPECS[name]
    good = list(spec.module_kwargs["class_counts"])
    bad = data.draw(st.sampled_from([
        [0] + good[1:], [-1] + good[1:], good[:-1], good + [3], [math.nan] + good[1:], [math.inf] + good[1:],
        [good], [], "abc",
    ]), label="class_counts")

    def run():
        module = _build(name, spec, class_counts=bad)
        args, kwargs = _make(spec, max(spec.min_batch, 3), torch.float32, 0)
        return _call(module, args, kwargs)

    with pytest.raises(ALLOWED_ERRORS) as info:
        run()
    # a wrong length may be reported as the input's class count not matching class_counts
    assert re.search(r"class[_ ]count", str(info.value)), str(info.value)


@pytest.mark.parametrize("name", sorted(BOX_LOSSES & set(NAMES)))
@FUZZ
@given(data=st.data())
def test_inverted_boxes_raise(name, data):
    spec = SPECS[name]
    args, kwargs = _make(spec, 4, torch.float32, data.draw(st.integers(0, 2**16)))
    module = _build(name, spec)
    which = data.draw(st.sampled_from([0, 1]), label="argument")
    row = data.draw(st.integers(0, 3), label="row")
    axis = data.draw(st.sampled_from([0, 1]), label="axis")
    b = args[which].detach().clone()
    b[row, axis], b[row, axis + 2] = b[row, axis + 2] + 1.0, b[row, axis].clone()
    args = list(args)
    args[which] = b.requires_grad_(args[which].requires_grad)
    with pytest.raises(ValueError) as info:
        _call(module, args, kwargs)
    assert _param_names(module)[which] in str(info.value), str(info.value)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_target_requiring_grad_is_refused_or_exact(name, data):
    """A float data argument that requires grad must raise, or get the gradient the formula implies
    (checked against central differences in float64), or none at all (documented stop-gradient)."""
    spec = SPECS[name]
    args, kwargs = _make(spec, max(spec.min_batch, 3), torch.float64, data.draw(st.integers(0, 2**16)))
    module = _build(name, spec).double()
    floats = [(i, p, t) for i, p, t in _data_args(args, module, name) if t.is_floating_point() and t.numel()]
    if not floats:
        return
    i, pname, t = floats[data.draw(st.integers(0, len(floats) - 1), label="which target")]
    t = t.clone().requires_grad_()
    args = list(args)
    args[i] = t
    loss = _raises_named(lambda: _call(module, args, kwargs), [pname])
    if loss is None:
        return
    assert torch.isfinite(loss).all()
    if not loss.requires_grad:
        return
    (g,) = torch.autograd.grad(loss.sum(), [t], allow_unused=True)
    if g is None:
        return
    assert torch.isfinite(g).all()
    if name in DETACHED_TERMS:
        return
    # directional derivative against central differences (stateful modules: fresh copies)
    v = torch.randn(t.shape, generator=torch.Generator().manual_seed(1), dtype=t.dtype)
    if t.min() >= 0 and t.max() <= 1:  # probability-valued (labels, masks): stay inside [0, 1]
        v = v * (t.detach() > 1e-3) * (t.detach() < 1 - 1e-3)
    h = 1e-6

    def value(x):
        a = list(args)
        a[i] = x
        return _call(_build(name, spec).double(), a, kwargs).sum().item()

    fd = (value(t.detach() + h * v) - value(t.detach() - h * v)) / (2 * h)
    assert math.isclose(fd, float((g * v).sum()), rel_tol=1e-4, abs_tol=1e-6), (fd, float((g * v).sum()))
