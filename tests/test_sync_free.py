"""The sync-free value checks and data-dependent paths of the regression, box, classification and
segmentation families, exercised on CPU.

``_device_paths()`` makes CPU tensors take the code paths that CUDA tensors take (device-side
asserts instead of host reads, masking instead of selection); ``torch.compile`` takes them too.
The generic per-loss checks (same value and gradient, no host reads) are in test_contract.py;
here: the messages of the device-side asserts, the "full" validation mode, the per-device
class_counts cache, and the masked forms of ignore_index / absent classes against the eager
selection they replace (reductions, gradients and EQL statistics).
"""

from __future__ import annotations

import copy

import pytest
import torch

import tailwise
import tailwise.functional as TF
from tailwise._validation import _device_paths, check_class_counts, host_value_checks
from tailwise.classification.equalized_focal import EqualizedFocalLoss
from tailwise.classification.eqlv2 import EQLv2Loss, eqlv2_loss
from tailwise.classification.softmax_eql import SoftmaxEQLLoss


def _assert_fails(fn, message):
    """Device path: ``torch._assert_async`` (a RuntimeError on CPU) carrying the message."""
    with _device_paths():
        with pytest.raises(RuntimeError, match=message):
            fn()


# ----------------------------------------------------------------------------- value checks
BAD_INPUTS = [
    # (call, exact eager-CPU message, device-side assert message)
    (lambda: TF.cross_entropy_loss(torch.randn(3, 4), torch.tensor([0, 4, 1])),
     r"target must be class indices in \[0, 3\].*got 4", r"target must be class indices in \[0, 3\]"),
    (lambda: TF.balanced_softmax_loss(torch.randn(3, 2), torch.tensor([0, 1, 1]), torch.tensor([3.0, 0.0])),
     "class_counts must be positive", "class_counts must be finite and positive"),
    (lambda: TF.giou_loss(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 2., 1., 1.]])),
     "target has an inverted box", "inverted"),
    (lambda: TF.iou_loss(torch.tensor([[1., 0., 0., 1.]]), torch.tensor([[0., 0., 1., 1.]])),
     "input has an inverted box", "inverted"),
    (lambda: TF.mse_loss(torch.randn(3), torch.tensor([0.0, float("nan"), 1.0])),
     "target must be finite", "target must be finite"),
    (lambda: TF.bmc_loss(torch.randn(3), torch.randn(3), torch.tensor(-1.0)),
     "noise_sigma must be a finite number > 0", "noise_sigma must be a finite number > 0"),
    (lambda: TF.bni_loss(torch.randn(3), torch.randn(3), 1.0, torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.0])),
     "bin_weights must be strictly positive", "bin_weights must be strictly positive"),
    (lambda: TF.dice_loss(torch.randn(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2.0)),
     r"must be in \[0, 1\]", r"must be in \[0, 1\]"),
    (lambda: TF.cross_entropy_loss(torch.randn(3, 2), torch.tensor([0, 1, 1]), class_weight=torch.tensor([1.0, -1.0])),
     "class_weight must be finite and non-negative", "class_weight must be finite and non-negative"),
    (lambda: TF.difficulty_loss(torch.randn(3, 2), torch.tensor([0, 1, 1]), torch.tensor([0.5, 1.5])),
     r"per_class_acc must be finite accuracies in \[0, 1\]", r"per_class_acc must be finite accuracies in \[0, 1\]"),
    (lambda: TF.neural_collapse_loss(torch.randn(2, 4, 3, 3), torch.full((2, 3, 3), 7), 3),
     r"target must be class indices in \[0, 2\]", r"target must be class indices in \[0, 2\]"),
]


@pytest.mark.parametrize("call, exact, device_message", BAD_INPUTS)
def test_value_checks_exact_on_cpu_device_asserts_otherwise_and_full_mode(call, exact, device_message):
    with pytest.raises(ValueError, match=exact):
        call()
    _assert_fails(call, device_message)
    # "full" mode restores the exact messages wherever the tensors live
    with _device_paths(), tailwise.validation("full"):
        with pytest.raises(ValueError, match=exact):
            call()


def test_host_value_checks_rules():
    x = torch.zeros(2)
    assert host_value_checks(x) and host_value_checks(1.0, x)
    with _device_paths():
        assert not host_value_checks(x)
        with tailwise.validation("full"):
            assert host_value_checks(x)
    meta = torch.zeros(2, device="meta")  # any non-CPU device counts as an accelerator
    assert not host_value_checks(x, meta)


def test_validate_false_skips_box_checks_on_device_paths():
    inverted = torch.tensor([[1., 1., 0., 0.]])
    with _device_paths():
        out = TF.giou_loss(inverted, inverted, validate=False)
    assert torch.isfinite(out)


def test_nan_prediction_propagates_on_device_paths():
    """A NaN in a model output is not a failed value check there: it gives a NaN loss."""
    target = torch.tensor([[0., 0., 1., 1.]])
    pred = torch.tensor([[0., 0., float("nan"), 1.]], requires_grad=True)
    with _device_paths():
        # box losses count a non-finite box as invalid under validate=True; without it, it propagates
        for fn in (TF.giou_loss, TF.eiou_loss, TF.iou_loss, TF.cdiou_loss):
            assert fn(pred, target, validate=False).isnan()
        z = torch.tensor([[float("nan"), 0.0]])
        assert TF.cross_entropy_loss(z, torch.tensor([1])).isnan()
        assert TF.balanced_softmax_loss(z, torch.tensor([1]), [3, 1]).isnan()


def test_compiled_value_check_is_a_device_assert():
    torch._dynamo.reset()
    fn = torch.compile(TF.cross_entropy_loss, fullgraph=True, backend="aot_eager")
    z = torch.randn(4, 3)
    assert torch.allclose(fn(z, torch.tensor([0, 1, 2, 0])), TF.cross_entropy_loss(z, torch.tensor([0, 1, 2, 0])))
    with pytest.raises(RuntimeError, match="target must be class indices"):
        fn(z, torch.tensor([0, 1, 3, 0]))


def test_float32_compute_does_not_recompile():
    """dice once hit the recompile limit through the float32_compute wrapper."""
    torch._dynamo.reset()
    mod = torch.compile(tailwise.DiceLoss(), fullgraph=True, backend="eager")
    mod(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)))
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            mod(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)))
    torch._dynamo.reset()


# ----------------------------------------------------------------------------- class_counts cache
def test_class_counts_converted_once_per_device_and_content():
    counts = [10, 5, 1]
    a = check_class_counts(counts, 3, device="cpu")
    assert check_class_counts(list(counts), 3, device="cpu") is a  # keyed by content
    assert a.dtype == torch.float64 and a.tolist() == [10.0, 5.0, 1.0]
    assert check_class_counts([10, 5, 2], 3, device="cpu") is not a
    t = torch.tensor([4.0, 2.0])
    b = check_class_counts(t, 2, device="meta")  # a tensor elsewhere: keyed by identity and version
    assert b.device.type == "meta" and check_class_counts(t, 2, device="meta") is b
    t.add_(1)  # an in-place update is a new version
    assert check_class_counts(t, 2, device="meta") is not b
    # a tensor on the requested device is used where it lives (a module's buffer)
    buf = torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert check_class_counts(buf, 2, device="cpu").data_ptr() == buf.data_ptr()
    with pytest.raises(ValueError, match="class_counts must be positive"):
        check_class_counts([1, 0], 2, device="meta")


def test_functional_class_counts_list_not_copied_per_call(monkeypatch):
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    counts = [30, 20, 10]
    first = TF.logit_adjusted_loss(z, y, counts)
    calls = []
    real = torch.as_tensor
    monkeypatch.setattr(torch, "as_tensor", lambda *a, **k: calls.append(1) or real(*a, **k))
    for fn in (TF.logit_adjusted_loss, TF.iif_loss, TF.class_balanced_loss, TF.bal_bce_loss):
        fn(z, y, counts)
        fn(z, y, counts)
    calls.clear()
    again = TF.logit_adjusted_loss(z, y, counts)
    for fn in (TF.iif_loss, TF.class_balanced_loss, TF.bal_bce_loss):
        fn(z, y, counts)
    assert calls == []
    assert torch.equal(first, again)


# ----------------------------------------------------------------------------- masking vs selection
def _with_ignored(n=8, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    y[1] = y[4] = -100
    return z, y


@pytest.mark.parametrize("make", [lambda: EQLv2Loss(5), lambda: SoftmaxEQLLoss(5), lambda: EqualizedFocalLoss(5)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_eql_ignored_rows_masked_equal_removed(make, reduction):
    z, y = _with_ignored()
    host, device = make(), make()
    host.reduction = device.reduction = reduction
    w = torch.rand(8, generator=torch.Generator().manual_seed(3))
    for step in range(3):  # statistics move: the weights of step 2 depend on the masked increments
        za = z.clone().requires_grad_()
        zb = z.clone().requires_grad_()
        la = host(za, y, w if step == 2 else None)
        with _device_paths():
            lb = device(zb, y, w if step == 2 else None)
        torch.testing.assert_close(lb, la)
        la.sum().backward()
        lb.sum().backward()
        torch.testing.assert_close(zb.grad, za.grad)
        assert (zb.grad[[1, 4]] == 0).all()
        torch.testing.assert_close(device.pos_grad, host.pos_grad)
        torch.testing.assert_close(device.neg_grad, host.neg_grad)


@pytest.mark.parametrize("fn", [
    lambda z, y, r: TF.cross_entropy_loss(z, y, reduction=r, label_smoothing=0.1),
    lambda z, y, r: TF.focal_loss(z, y, reduction=r),
    lambda z, y, r: TF.class_balanced_loss(z, y, [9, 7, 5, 3, 1], reduction=r),
    lambda z, y, r: eqlv2_loss(z, y, reduction=r),
])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignore_index_device_path_matches(fn, reduction):
    z, y = _with_ignored()
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    la = fn(za, y, reduction)
    with _device_paths():
        lb = fn(zb, y, reduction)
    torch.testing.assert_close(lb, la)
    la.sum().backward()
    lb.sum().backward()
    torch.testing.assert_close(zb.grad, za.grad)


def test_all_rows_ignored_gives_zero_with_grad_on_device_paths():
    z = torch.randn(3, 4, requires_grad=True)
    y = torch.full((3,), -100)
    with _device_paths():
        for fn in (TF.cross_entropy_loss, TF.focal_loss, EQLv2Loss(4), SoftmaxEQLLoss(4), EqualizedFocalLoss(4)):
            out = fn(z, y)
            assert out.item() == 0.0
            out.backward()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_neural_collapse_absent_classes_and_ignored_pixels(reduction, smoothing):
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 8, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)  # classes 3 and 4 absent
    target[0, 0, :2] = -100
    fa, fb = feats.clone().requires_grad_(), feats.clone().requires_grad_()
    la = TF.neural_collapse_loss(fa, target, 5, reduction=reduction, label_smoothing=smoothing)
    with _device_paths():
        lb = TF.neural_collapse_loss(fb, target, 5, reduction=reduction, label_smoothing=smoothing)
    torch.testing.assert_close(lb, la)
    if reduction == "none":
        assert la.shape == (5,) and (la[3:] == 0).all() and (la[:3] > 0).all()
    # by hand: centre of each present class, normalised, classified by the ETF
    etf = tailwise.simplex_etf(5, 8)
    f = feats.permute(0, 2, 3, 1).reshape(-1, 8)
    t = target.reshape(-1)
    per = []
    for c in range(3):
        mu = torch.nn.functional.normalize(f[t == c].mean(0), dim=0)
        logp = torch.log_softmax(5.0 * mu @ etf.T, 0)
        q = torch.full((5,), smoothing / 4)
        q[c] = 1 - smoothing
        per.append(-(q * logp).sum())
    per = torch.stack(per)
    want = {"mean": per.mean(), "sum": per.sum(), "none": torch.cat([per, torch.zeros(2)])}[reduction]
    torch.testing.assert_close(la, want, rtol=1e-5, atol=1e-6)
    la.sum().backward()
    lb.sum().backward()
    torch.testing.assert_close(fb.grad, fa.grad)
    assert (fa.grad[0, :, 0, :2] == 0).all()  # ignored pixels get no gradient


def test_dice_ignore_index_device_path_matches():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 5, generator=g)
    y = torch.randint(0, 3, (2, 5, 5), generator=g)
    y[0, 0] = -100
    for fn in (TF.dice_loss, TF.tversky_loss, TF.dice_ce_loss):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        la = fn(xa, y)
        with _device_paths():
            lb = fn(xb, y)
        torch.testing.assert_close(lb, la)
        la.backward()
        lb.backward()
        torch.testing.assert_close(xb.grad, xa.grad)


def test_module_buffers_follow_the_module():
    """class statistics live in buffers, so they move with .to() (no host copy per call)."""
    for name, kwargs in (("balanced_softmax", dict(class_counts=[3, 2, 1])), ("bal_bce", dict(class_counts=[3, 2, 1])),
                         ("class_balanced", dict(class_counts=[3, 2, 1])), ("iif", dict(class_counts=[3, 2, 1])),
                         ("tade", dict(class_counts=[3, 2, 1])), ("eqlv2", dict(num_classes=3)),
                         ("difficulty", dict(num_classes=3))):
        mod = copy.deepcopy(tailwise.build_loss(name, **kwargs)).to("meta")
        assert all(b.device.type == "meta" for b in mod.buffers()), name
