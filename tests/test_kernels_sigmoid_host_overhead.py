"""The slimmed eager front-ends of the sigmoid family's Triton path (Triton's interpreter, CPU).

The accelerator code paths are taken on CPU with ``_device_paths()``: the class-index range of
``bal_bce`` and ``class_balanced`` (sigmoid / focal) is checked by the forward kernel (one
device-side assert on the flag it clears) instead of a separate ~6-op check; eager CPU keeps the
exact ``ValueError``. Values and gradients equal the torch path's.
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

C = 7
COUNTS = [100, 50, 20, 9, 5, 3, 1]


def test_module_in_the_triton_interpreter():
    run_interpreted(__file__)


def _data(seed=0, n=13):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, generator=g) * 3, torch.randint(0, C, (n,), generator=g)


INDEX = {
    "bal_bce": lambda z, y: TF.bal_bce_loss(z, y, COUNTS, label_smoothing=0.1),
    "class_balanced_sigmoid": lambda z, y: TF.class_balanced_loss(z, y, COUNTS, beta=0.99, loss_type="sigmoid"),
    "class_balanced_focal": lambda z, y: TF.class_balanced_loss(z, y, COUNTS, beta=0.99, loss_type="focal",
                                                               gamma=1.5),
    "eqlv2": lambda z, y: TF.eqlv2_loss(z, y, torch.linspace(1, 3, C), torch.linspace(2, 5, C)),
    "eqlv2_module": lambda z, y: _module("eqlv2")(z, y),
    "equalized_focal": lambda z, y: TF.equalized_focal_loss(z, y, torch.linspace(1, 3, C), torch.linspace(2, 5, C)),
    "equalized_focal_module": lambda z, y: _module("equalized_focal")(z, y),
}


_MODULES: dict = {}


def _module(name):
    # trained one step (non-trivial weights), the statistics then frozen: each call sees the same
    # weights; built once (not inside a counted step)
    if name in _MODULES:
        return _MODULES[name]
    mod = _MODULES[name] = tailwise.build_loss(name, num_classes=C)
    g = torch.Generator().manual_seed(9)
    with backend("torch"):
        mod(torch.randn(20, C, generator=g), torch.randint(0, C, (20,), generator=g))
    return mod.eval()


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


@pytest.mark.parametrize("name", sorted(INDEX))
def test_device_paths_of_the_kernel_match_the_torch_path(name):
    z, y = _data()
    want = _value_grad(INDEX[name], z, y, "torch")
    got = _value_grad(INDEX[name], z, y, "triton", device_paths=True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(INDEX))
@pytest.mark.parametrize("bad", [C, -3])
def test_kernel_checks_the_target_range(name, bad):
    z, y = _data()
    y[11] = bad
    # accelerator path: the kernel clears the flag and the device-side assert fires (on CPU,
    # torch._assert_async raises at once)
    with pytest.raises(RuntimeError, match=rf"target must be class indices in \[0, {C - 1}\]"):
        _value_grad(INDEX[name], z, y, "triton", device_paths=True)
    # eager CPU on the Triton backend: the exact host check, naming the bad value
    with pytest.raises(ValueError, match=rf"got {bad}"):
        _value_grad(INDEX[name], z, y, "triton")


@pytest.mark.parametrize("name", sorted(INDEX))
def test_no_separate_range_check_on_the_device_path(name):
    """The range check is the kernel's flag: no lt/ge/any/bitwise ops, one assert."""
    z, y = _data()
    ops = _ops_of_a_step(INDEX[name], z, y)
    for banned in ("any", "bitwise_or", "bitwise_not", "lt", "ge", "aminmax"):
        assert banned not in ops, (banned, ops)
    assert ops.count("_assert_async") == 1, ops


@pytest.mark.parametrize("row", [0, 12, 40])
@pytest.mark.parametrize("bad", [C, 1000, -1])
def test_the_kernel_clears_the_flag_for_a_bad_row_only(row, bad, monkeypatch):
    """The flag itself, launched directly: one bad index in any program's block clears it
    (41 rows in 8-row tiles: six programs, the last one partly masked), good ones leave it."""
    from tailwise.kernels import _sigmoid_triton as st
    monkeypatch.setitem(st.TUNE, "fwd", (8, 8, 4))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(41, 5, generator=g)
    y = torch.randint(0, 5, (41,), generator=g)
    flag = torch.ones(1, dtype=torch.int32)
    st._launch_fwd(x, y, None, None, None, None, 1.0, 0.0, -1.0, 0.0, True, flag)
    assert flag.item() == 1
    y[row] = bad
    flag = torch.ones(1, dtype=torch.int32)
    out = st._launch_fwd(x, y, None, None, None, None, 1.0, 0.0, -1.0, 0.0, True, flag)
    assert flag.item() == 0
    # the bad row is all-negative (its index matches no column) and reads nothing out of bounds
    want = torch.nn.functional.softplus(x[row]).sum()
    torch.testing.assert_close(out[row], want, rtol=1e-5, atol=1e-6)


def test_validate_falls_back_to_the_torch_check_while_reading_values_is_allowed():
    """``sigmoid_family_triton(validate=True)`` on eager CPU: the exact host check."""
    from tailwise.kernels._sigmoid_triton import sigmoid_family_triton
    z, y = _data()
    y[2] = C
    with pytest.raises(ValueError, match=rf"got {C}"):
        sigmoid_family_triton(z, y, validate=True)
    with _device_paths(), pytest.raises(RuntimeError, match="target must be class indices"):
        sigmoid_family_triton(z, y, validate=True)


# ------------------------------------------------------------------ EQLv2 / EFL: ignored rows on the device path
def _ignored_data(seed=2, n=13):
    z, y = _data(seed, n)
    y[::4] = -100
    return z, y


def test_masked_rows_are_the_one_hot_neutral_rows():
    """The device path's neutral logits equal the former one-hot form bit for bit (label 0 for
    an ignored row: +B at column 0, -B elsewhere), kept rows untouched."""
    from tailwise.classification._grad_stats import _NEUTRAL_LOGIT, drop_ignored
    z, y = _ignored_data()
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        x = z.to(dtype)
        with _device_paths():
            got, safe, _, keep = drop_ignored(x, y, None, -100)
        want_safe = torch.where(y != -100, y, torch.zeros_like(y))
        neutral = torch.nn.functional.one_hot(want_safe, C).to(dtype) * (2 * _NEUTRAL_LOGIT) - _NEUTRAL_LOGIT
        want = torch.where((y != -100).unsqueeze(1), x, neutral)
        assert torch.equal(safe, want_safe) and got.dtype == dtype
        assert torch.equal(got, want), dtype
        assert torch.equal(keep.keep, y != -100)


@pytest.mark.parametrize("name", ["eqlv2", "equalized_focal"])
def test_ignored_rows_on_the_device_path(name):
    """Masked ignored rows (device path): the kernel's loss and gradient match the torch path,
    the statistics are bit-identical to the torch backend's, and all match dropping the rows."""
    z, y = _ignored_data()
    keep = y != -100

    def step(be, device_paths, zz, yy):
        mod = tailwise.build_loss(name, num_classes=C)
        out = []
        for _ in range(2):   # the second step uses the statistics of the first
            x = zz.clone().requires_grad_(True)
            with backend(be):
                if device_paths:
                    with _device_paths():
                        loss = mod(x, yy)
                else:
                    loss = mod(x, yy)
            loss.backward()
            out.append((loss.detach(), x.grad))
        return out, mod.pos_grad.clone(), mod.neg_grad.clone()

    t_steps, t_pos, t_neg = step("torch", True, z, y)
    k_steps, k_pos, k_neg = step("triton", True, z, y)
    assert torch.equal(k_pos, t_pos) and torch.equal(k_neg, t_neg)
    for (lk, gk), (lt, gt) in zip(k_steps, t_steps):
        torch.testing.assert_close(lk, lt, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gk, gt, rtol=1e-4, atol=1e-6)
        assert torch.count_nonzero(gk[~keep]) == 0
    d_steps, d_pos, d_neg = step("torch", False, z[keep], y[keep])
    torch.testing.assert_close(t_pos, d_pos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t_neg, d_neg, rtol=1e-5, atol=1e-6)
    for (lt, gt), (ld, gd) in zip(t_steps, d_steps):
        torch.testing.assert_close(lt, ld, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gt[keep], gd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["eqlv2", "equalized_focal"])
def test_ignored_rows_cost_no_one_hot(name):
    z, y = _ignored_data()
    mod = tailwise.build_loss(name, num_classes=C)
    if name == "equalized_focal":
        mod.eval()   # EFL's statistics (training) take a one-hot of their own, as on the torch path
    ops = _ops_of_a_step(mod, z, y)
    # no one_hot (its CPU range check is aminmax) and no neutral (N, C) matrix arithmetic
    assert "aminmax" not in ops and "zeros_like" not in ops and "scatter_" not in ops, ops


# ------------------------------------------------------------------ sigmoid_focal's pos_weight: checked once per version
def _multilabel(seed=4, n=9):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, generator=g) * 2, (torch.rand(n, C, generator=g) > 0.6).float()


def test_pos_weight_on_the_device_is_checked_once_per_version():
    x, t = _multilabel()
    pw = torch.linspace(0.5, 3.0, C)

    def fn(a, b):
        return TF.sigmoid_focal_loss(a, b, pos_weight=pw)

    ops = _ops_of_a_step(fn, x, t)
    assert "all" not in ops and "isfinite" not in ops, ops
    assert ops.count("_assert_async") == 1, ops   # the target's probability check only
    # the same values and gradients as BCEWithLogitsLoss's formula, pos_weight applied
    want = _value_grad(lambda a, b: TF.sigmoid_focal_loss(a, b, pos_weight=pw.clone()), x, t, "torch")
    got = _value_grad(fn, x, t, "triton", device_paths=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # an in-place update is a new version: checked again (device-side assert), and the new values used
    with torch.no_grad():
        pw[2] = -1.0
    with pytest.raises(RuntimeError, match="pos_weight must be finite and non-negative"):
        _value_grad(fn, x, t, "triton", device_paths=True)
    with pytest.raises(ValueError, match="pos_weight must be finite and non-negative"):
        _value_grad(fn, x, t, "triton")
    with pytest.raises(ValueError, match="pos_weight must be finite and non-negative"):
        _value_grad(fn, x, t, "triton")   # a bad tensor is never cached: raises every call
    with torch.no_grad():
        pw[2] = 4.0
    want = _value_grad(lambda a, b: TF.sigmoid_focal_loss(a, b, pos_weight=torch.linspace(0.5, 3.0, C).index_fill(
        0, torch.tensor([2]), 4.0)), x, t, "torch")
    assert torch.equal(_value_grad(fn, x, t, "triton")[0], want[0])


def test_pos_weight_module_buffer_and_dtype():
    x, t = _multilabel()
    mod = tailwise.build_loss("sigmoid_focal", pos_weight=torch.linspace(0.5, 3.0, C))
    a = _value_grad(mod, x, t, "triton", device_paths=True)
    b = _value_grad(mod, x.double(), t.double(), "triton", device_paths=True)   # a second dtype entry
    c = _value_grad(mod, x, t, "torch")
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    torch.testing.assert_close(b[0].float(), c[0], rtol=1e-5, atol=1e-6)
    mod.load_state_dict({"pos_weight": torch.full((C,), 2.0)})   # copy_: a new version
    d = _value_grad(mod, x, t, "torch")
    e = _value_grad(lambda p, q: TF.sigmoid_focal_loss(p, q, pos_weight=torch.full((C,), 2.0)), x, t, "torch")
    assert torch.equal(d[0], e[0])
