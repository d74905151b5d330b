"""The slimmed eager front-ends of the Triton paths (run in Triton's interpreter on CPU tensors).

The accelerator code paths are taken on CPU with ``_device_paths()``: the target range of the
softmax family is checked inside the kernel (one device-side assert), the box validity flag is
asserted directly, and the ops dispatched besides the kernels stay few. Values and gradients
equal the torch path's.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tailwise
import tailwise.functional as TF
from tailwise._validation import _device_paths
from tailwise.kernels import backend

from _interpreted_module import INTERPRETED, interpreter, run_interpreted  # noqa: E402,F401

C = 7
COUNTS = [100, 50, 20, 9, 5, 3, 1]


def test_module_in_the_triton_interpreter():
    run_interpreted(__file__)


def _data(seed=0, n=13):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, C, generator=g) * 3
    y = torch.randint(0, C, (n,), generator=g)
    y[::4] = -100
    return z, y


SOFTMAX = {
    "cross_entropy": lambda z, y: TF.cross_entropy_loss(z, y, label_smoothing=0.1),
    "cross_entropy_cw": lambda z, y: TF.cross_entropy_loss(z, y, class_weight=torch.linspace(0.5, 2, C)),
    "balanced_softmax": lambda z, y: TF.balanced_softmax_loss(z, y, COUNTS),
    "logit_adjusted": lambda z, y: TF.logit_adjusted_loss(z, y, COUNTS, tau=0.6),
    "focal": lambda z, y: TF.focal_loss(z, y, alpha=torch.linspace(0.5, 2, C), gamma=2.0),
    "class_balanced": lambda z, y: TF.class_balanced_loss(z, y, COUNTS, beta=0.99),
    "iif": lambda z, y: TF.iif_loss(z, y, COUNTS),
}


def _value_grad(fn, z, y, be, device_paths=False):
    x = z.clone().requires_grad_(True)
    with backend(be):
        if device_paths:
            with _device_paths():
                loss = fn(x, y)
        else:
            loss = fn(x, y)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("name", sorted(SOFTMAX))
def test_device_paths_of_the_kernel_match_the_torch_path(name):
    z, y = _data()
    want = _value_grad(SOFTMAX[name], z, y, "torch")
    got = _value_grad(SOFTMAX[name], z, y, "triton", device_paths=True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SOFTMAX))
@pytest.mark.parametrize("bad", [C, -3])
def test_kernel_checks_the_target_range(name, bad):
    z, y = _data()
    y[5] = bad
    # accelerator path: the kernel clears the flag and the device-side assert fires (on CPU,
    # torch._assert_async raises at once)
    with pytest.raises(RuntimeError, match=rf"target must be class indices in \[0, {C - 1}\]"):
        _value_grad(SOFTMAX[name], z, y, "triton", device_paths=True)
    # eager CPU on the Triton backend: the exact host check, naming the bad value
    with pytest.raises(ValueError, match=rf"got {bad}"):
        _value_grad(SOFTMAX[name], z, y, "triton")


def test_kernel_target_check_ignores_only_ignore_index():
    z, y = _data()
    y[:] = -100
    y[3] = 2
    loss, grad = _value_grad(lambda a, b: TF.cross_entropy_loss(a, b), z, y, "triton", device_paths=True)
    want, want_grad = _value_grad(lambda a, b: TF.cross_entropy_loss(a, b), z, y, "torch")
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-6)
    y[:] = -100   # all ignored: 0 with a zero gradient, no assert
    loss, grad = _value_grad(lambda a, b: TF.cross_entropy_loss(a, b), z, y, "triton", device_paths=True)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


def _boxes(n=37):
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(n, 2, generator=g) * 10
    wh = torch.rand(n, 2, generator=g) * 5 + 0.5
    p = torch.cat([xy, xy + wh], 1)
    t = torch.cat([xy + 0.3, xy + wh * 1.2], 1)
    return p, t


@pytest.mark.parametrize("name", ["giou", "diou", "ciou", "eiou"])
def test_box_flag_is_the_assert_operand(name):
    fn = getattr(TF, f"{name}_loss")
    p, t = _boxes()
    want = _value_grad(fn, p, t, "torch")
    got = _value_grad(fn, p, t, "triton", device_paths=True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    p[20, 2] = p[20, 0] - 1.0   # inverted, in the second program's block of the interpreter? any block
    with pytest.raises(RuntimeError, match="inverted"):
        _value_grad(fn, p, t, "triton", device_paths=True)
    with pytest.raises(ValueError):
        _value_grad(fn, p, t, "triton")


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _ops_of_a_step(fn, z, y):
    with backend("triton"), _device_paths():
        x = z.clone().requires_grad_(True)
        fn(x, y).backward()   # warm-up: fills the per-device caches
        x = z.clone().requires_grad_(True)
        with _Count() as c:
            fn(x, y).backward()
    return c.ops


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_cw", "balanced_softmax", "focal",
                                  "class_balanced"])
def test_softmax_front_ends_dispatch_few_ops_besides_the_kernels(name):
    """No separate range check (any/bitwise ops), no gather of class weights (the weighted mean's
    denominator comes from the kernel), no per-call prior: the counts of
    benchmarks/host_overhead.py stay where they are."""
    z, y = _data()
    kwargs = {"class_counts": COUNTS} if name in ("balanced_softmax", "class_balanced") else {}
    if name == "cross_entropy_cw":
        name, kwargs = "cross_entropy", {"class_weight": torch.linspace(0.5, 2, C).tolist()}
    mod = tailwise.build_loss(name, **kwargs)
    ops = _ops_of_a_step(mod, z, y)
    for banned in ("any", "bitwise_or", "bitwise_and", "bitwise_not", "index", "log", "isfinite", "all",
                   "clamp_max"):
        assert banned not in ops, (banned, ops)
    assert ops.count("_assert_async") == 1, ops


def test_box_front_end_dispatches_no_reduction_for_the_check():
    p, t = _boxes()
    ops = _ops_of_a_step(tailwise.build_loss("giou"), p, t)
    assert "all" not in ops and "eq" not in ops and "zeros" not in ops, ops
    assert ops.count("_assert_async") == 1, ops


@pytest.mark.parametrize("mode,c,bad", [("multiclass", 4, 4), ("multiclass", 4, -2), ("binary", 1, 2)])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_overlap_kernel_checks_the_target_range(mode, c, bad, ignore_index):
    """Op ``overlap_index`` with ``validate=True``: the forward kernel checks the targets it reads
    (for a front-end that checks only their type); the statistics are those of the plain op."""
    from tailwise.kernels import dispatch
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, c, 37, generator=g)
    t = torch.randint(0, 2 if mode == "binary" else c, (2, 37), generator=g)
    if ignore_index is not None:
        t[0, ::5] = ignore_index

    def stats(tt, be, device_paths, validate):
        a = x.clone().requires_grad_(True)
        with backend(be):
            ctx = _device_paths() if device_paths else contextlib.nullcontext()
            with ctx:
                out = dispatch("overlap_index", a, tt, ignore_index, mode, True, True, True, None,
                               validate=validate)
        (out[0].sum() + 2 * out[1].sum() + out[3].sum() + out[5].sum()).backward()
        return [o.detach() for o in out if o is not None], a.grad

    want, want_g = stats(t, "torch", False, False)
    got, got_g = stats(t, "triton", True, True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_g, want_g, rtol=1e-4, atol=1e-5)
    tb = t.clone()
    tb[1, 7] = bad
    hi = 1 if mode == "binary" else c - 1
    with pytest.raises(RuntimeError, match=rf"target must be class indices in \[0, {hi}\]"):
        stats(tb, "triton", True, True)
    with pytest.raises(ValueError, match=rf"got {bad}"):
        stats(tb, "triton", False, True)
    with pytest.raises((RuntimeError, ValueError), match=r"class indices"):
        stats(tb, "torch", True, True)
