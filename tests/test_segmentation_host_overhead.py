"""The slimmed eager front-end of the Dice family on the Triton path (Triton's interpreter on CPU).

The class-index range check of ``dice``, ``dice_ce``, ``tversky``, ``focal_tversky`` and
``generalized_dice`` is done by the overlap kernel while it reads the targets (one device-side
assert on the accelerator paths, taken on CPU with ``_device_paths()``), and by the exact host
check on eager CPU (both backends). Values and gradients stay those of the torch path.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tailwise
import tailwise.functional as TF
from tailwise._validation import _device_paths
from tailwise.kernels import backend

from _interpreted_module import INTERPRETED, interpreter, run_interpreted  # noqa: E402,F401

C = 4
LOSSES = {
    "dice": lambda x, t, **kw: TF.dice_loss(x, t, **kw),
    "dice_ce": lambda x, t, **kw: TF.dice_ce_loss(x, t, **kw),
    "tversky": lambda x, t, **kw: TF.tversky_loss(x, t, **kw),
    "focal_tversky": lambda x, t, **kw: TF.focal_tversky_loss(x, t, **kw),
    "generalized_dice": lambda x, t, **kw: TF.generalized_dice_loss(x, t, **kw),
}


def test_module_in_the_triton_interpreter():
    run_interpreted(__file__)


def _data(seed=0, binary=False, ignore=True):
    g = torch.Generator().manual_seed(seed)
    c = 1 if binary else C
    x = torch.randn(2, c, 5, 7, generator=g) * 2
    t = torch.randint(0, 2 if binary else C, (2, 5, 7), generator=g)
    if ignore:
        t[0, ::2, 1] = -100
    return x, t


def _value_grad(fn, x, t, be, device_paths=False, **kw):
    a = x.clone().requires_grad_(True)
    with backend(be):
        if device_paths:
            with _device_paths():
                loss = fn(a, t, **kw)
        else:
            loss = fn(a, t, **kw)
    loss.backward()
    return loss.detach(), a.grad


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("binary", [False, True])
def test_device_paths_match_the_torch_path(name, binary):
    x, t = _data(binary=binary)
    kw = {"mode": "binary"} if binary else {}
    want = _value_grad(LOSSES[name], x, t, "torch", **kw)
    got = _value_grad(LOSSES[name], x, t, "triton", device_paths=True, **kw)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("binary,bad", [(False, C), (False, -3), (True, 2)])
def test_kernel_checks_the_target_range(name, binary, bad):
    x, t = _data(binary=binary)
    t[1, 3, 4] = bad
    kw = {"mode": "binary"} if binary else {}
    hi = 1 if binary else C - 1
    msg = rf"target must be class indices in \[0, {hi}\] \(or ignore_index=-100\)"
    # accelerator path: the kernel clears its flag and the device-side assert fires (on CPU,
    # torch._assert_async raises at once)
    with pytest.raises(RuntimeError, match=msg):
        _value_grad(LOSSES[name], x, t, "triton", device_paths=True, **kw)
    # eager CPU, either backend: the exact host check, naming the bad value
    for be in ("triton", "torch"):
        with pytest.raises(ValueError, match=msg + rf", got {bad}$"):
            _value_grad(LOSSES[name], x, t, be, **kw)


def test_range_check_without_ignore_index_and_on_the_one_hot_route():
    x, t = _data(ignore=False)
    t[0, 0, 0] = C
    with pytest.raises(RuntimeError, match=rf"target must be class indices in \[0, {C - 1}\]$"):
        _value_grad(LOSSES["dice"], x, t, "triton", device_paths=True, ignore_index=None)
    with pytest.raises(ValueError, match=rf"in \[0, {C - 1}\], got {C}$"):
        _value_grad(LOSSES["dice"], x, t, "torch", ignore_index=None)
    # raw scores with soft_label build the one-hot target: the front-end still checks the range
    with pytest.raises(ValueError, match=rf"got {C}$"):
        _value_grad(LOSSES["dice_ce"], x, t, "torch", ignore_index=None, dice_activation="none",
                    soft_label=True)
    with pytest.raises(RuntimeError, match=rf"target must be class indices in \[0, {C - 1}\]$"):
        _value_grad(LOSSES["dice_ce"], x, t, "triton", device_paths=True, ignore_index=None,
                    dice_activation="none", soft_label=True)


def test_only_ignore_index_escapes_the_check():
    x, t = _data()
    t[:] = -100
    t[1, 2, 3] = 1
    want = _value_grad(LOSSES["dice"], x, t, "torch")
    got = _value_grad(LOSSES["dice"], x, t, "triton", device_paths=True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_front_end_runs_no_separate_range_check(name):
    """The counts of benchmarks/host_overhead.py stay down: no any/bitwise reduction for the
    range, one device-side assert (the kernel's flag); dice_ce's default weights cost no mul."""
    x, t = _data()
    mod = tailwise.build_loss(name)
    with backend("triton"), _device_paths():
        a = x.clone().requires_grad_(True)
        mod(a, t).backward()   # warm-up
        a = x.clone().requires_grad_(True)
        with _Count() as c:
            mod(a, t).backward()
    for banned in ("any", "bitwise_or", "bitwise_and", "bitwise_not", "lt", "zeros_like"):
        assert banned not in c.ops, (banned, c.ops)
    assert c.ops.count("_assert_async") == 1, c.ops
    if name == "dice_ce":
        # 2 * tp (forward) and its backward: the lambdas of 1 add none
        assert c.ops.count("mul") == 3, c.ops


def test_dice_ce_unit_weights_are_bit_identical_to_the_weighted_form():
    """Skipping the multiplications by lambda = 1 keeps value and gradient bit for bit."""
    from tailwise.segmentation import dice_ce as mod
    x, t = _data()
    for kw in ({}, {"reduction": "none"}, {"batch": True}, {"sample_weight": torch.tensor([0.5, 2.0])}):
        def fn(a, b):
            return TF.dice_ce_loss(a, b, **kw).sum()
        orig = mod._scaled
        mod._scaled = lambda lam, v: lam * v   # the former arithmetic
        try:
            want = _value_grad(fn, x, t, "torch")
        finally:
            mod._scaled = orig
        now = _value_grad(fn, x, t, "torch")
        assert torch.equal(now[0], want[0]) and torch.equal(now[1], want[1]), kw


def test_generalized_dice_weights_equal_the_former_where_form():
    from tailwise.segmentation.generalized_dice import _class_weights
    sy = torch.tensor([[0.0, 3.0, 1e-30, 7.0], [2.0, 0.0, 0.0, 5.0]])
    for w_type in ("square", "simple"):
        for batch in (False, True):
            w = 1.0 / (sy * sy if w_type == "square" else sy)
            inf = torch.isinf(w)
            finite = torch.where(inf, torch.zeros_like(w), w)
            top = finite.amax() if batch else finite.amax(dim=-1, keepdim=True)
            want = torch.where(inf, top.expand_as(w) if not batch else top, finite)
            assert torch.equal(_class_weights(sy, w_type, batch), want)
