"""``pos_weight`` of the sigmoid / binary focal loss: BCEWithLogits semantics, kornia's definition
for 0/1 targets, gradients, broadcasting, validation (exact on CPU, device-side assert elsewhere)."""

import math

import pytest
import torch
import torch.nn.functional as F

import tailwise
import tailwise.functional as TF
from tailwise._validation import _device_paths


def kornia_binary_focal(x, t, alpha, gamma, pos_weight):
    """kornia's ``binary_focal_loss_with_logits`` definition, transcribed from its formula.

    pos term ``-alpha pw (1-p)^gamma t log p``, neg term ``-(1-alpha) p^gamma (1-t) log(1-p)``,
    ``pos_weight`` ``(C,)`` over dim 1 (inputs here are ``(N, C)``, where dim 1 is the last dim).
    """
    p = torch.sigmoid(x)
    pos = -alpha * pos_weight * (1 - p) ** gamma * t * torch.log(p)
    neg = -(1 - alpha) * p ** gamma * (1 - t) * torch.log(1 - p)
    return pos + neg


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape, pw_shape", [((2, 3, 2), (3, 1)), ((5, 4), (4,)), ((5, 4), ()), ((6,), (1,))])
def test_gamma0_no_alpha_is_bce_with_logits_pos_weight(reduction, shape, pw_shape):
    # kornia's own check (its test_value_same_as_torch_bce_loss_pos_weight_weight): soft labels,
    # pos_weight (C, 1) for (N, C, L) logits, gamma=0 and no alpha -> BCEWithLogits(pos_weight)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 8 - 4
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    pw = torch.rand(pw_shape, generator=g, dtype=torch.float64) * 3
    got = TF.sigmoid_focal_loss(x, t, alpha=-1, gamma=0, reduction=reduction, pos_weight=pw)
    want = F.binary_cross_entropy_with_logits(x, t, reduction=reduction, pos_weight=pw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_hand_value():
    x = torch.tensor([[2.0], [-1.0]])
    t = torch.tensor([[1.0], [0.0]])
    got = TF.sigmoid_focal_loss(x, t, alpha=-1, gamma=0, pos_weight=torch.tensor([3.0]))
    want = (3 * math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert got.item() == pytest.approx(want, rel=1e-6)
    # with the focal terms: alpha_t (1 - p_t)^2 times the weighted cross-entropy, per element
    p1, p2 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))
    want = [0.25 * (1 - p1) ** 2 * 3 * -math.log(p1), 0.75 * p2 ** 2 * -math.log(1 - p2)]
    got = TF.sigmoid_focal_loss(x, t, reduction="none", pos_weight=torch.tensor([3.0]))
    torch.testing.assert_close(got.flatten(), torch.tensor(want), rtol=1e-6, atol=0)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.8, 0.5), (0.5, 1.0)])
def test_hard_labels_match_kornia_definition(alpha, gamma):
    # kornia's test_shape_pos_weight_weight parameters: pos_weight (1, 2, 5), alpha 0.8, gamma 0.5
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64) * 3
    t = (torch.rand(16, 3, generator=g) > 0.5).double()
    pw = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    got = TF.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="none", pos_weight=pw)
    torch.testing.assert_close(got, kornia_binary_focal(x, t, alpha, gamma, pw), rtol=1e-10, atol=1e-14)


def test_kornia_numeric_stability_example_and_float32_precision():
    # kornia's test_numeric_stability: logits [[100, -100]], labels [[1, 0]] -> [[0, 0]]
    x = torch.tensor([[100.0, -100.0]])
    t = torch.tensor([[1.0, 0.0]])
    out = TF.sigmoid_focal_loss(x, t, reduction="none", pos_weight=torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(out, torch.zeros(1, 2))
    # confident positives keep their float32 digits (BCE = pw * 1.1254e-7 at x = 16, t = 1)
    got = TF.sigmoid_focal_loss(torch.tensor([16.0]), torch.tensor([1.0]), alpha=-1, gamma=0,
                                reduction="sum", pos_weight=torch.tensor(4.0))
    assert got.item() == pytest.approx(4 * math.log1p(math.exp(-16.0)), rel=1e-5)
    got = TF.sigmoid_focal_loss(torch.tensor([-16.0]), torch.tensor([0.0]), alpha=-1, gamma=0,
                                reduction="sum", pos_weight=torch.tensor(4.0))
    assert got.item() == pytest.approx(math.log1p(math.exp(-16.0)), rel=1e-5)
    # huge logits of either sign: finite values and gradients
    z = torch.tensor([[1e4, -1e4, 80.0, -80.0]], requires_grad=True)
    loss = TF.sigmoid_focal_loss(z, torch.tensor([[0.0, 1.0, 0.3, 0.7]]), gamma=1.5, pos_weight=torch.tensor(3.0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_ones_equal_the_fused_default_path_values_and_gradients():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 5, generator=g)
    t = torch.rand(32, 5, generator=g)
    for alpha, gamma in [(0.25, 2.0), (-1, 1.5), (0.6, 0.0)]:
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        la = TF.sigmoid_focal_loss(a, t, alpha=alpha, gamma=gamma, reduction="sum")
        lb = TF.sigmoid_focal_loss(b, t, alpha=alpha, gamma=gamma, reduction="sum", pos_weight=torch.ones(5))
        torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-6)
        la.backward()
        lb.backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_pos_weight_scales_only_the_positive_term():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    t = (torch.rand(10, 4, generator=g) > 0.5).double()
    pw = torch.tensor([0.5, 1.0, 2.0, 7.0], dtype=torch.float64)
    base = TF.sigmoid_focal_loss(x, t, reduction="none")
    got = TF.sigmoid_focal_loss(x, t, reduction="none", pos_weight=pw)
    torch.testing.assert_close(got, torch.where(t > 0, base * pw, base), rtol=1e-12, atol=0)
    # zero weight: positives contribute nothing
    got0 = TF.sigmoid_focal_loss(x, t, reduction="none", pos_weight=torch.zeros(4, dtype=torch.float64))
    assert (got0[t > 0] == 0).all()
    torch.testing.assert_close(got0[t == 0], base[t == 0], rtol=1e-12, atol=0)


def test_binary_case_shapes_sample_weight_and_empty_batch():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, generator=g)
    t = (torch.rand(7, generator=g) > 0.5).float()
    a = TF.sigmoid_focal_loss(x, t, pos_weight=torch.tensor(2.5))
    b = TF.sigmoid_focal_loss(x[:, None], t[:, None], pos_weight=torch.tensor([2.5]))
    torch.testing.assert_close(a, b)
    w = torch.rand(7, generator=g)
    none = TF.sigmoid_focal_loss(x, t, reduction="none", pos_weight=torch.tensor(2.5))
    torch.testing.assert_close(TF.sigmoid_focal_loss(x, t, reduction="sum", pos_weight=torch.tensor(2.5),
                                                     sample_weight=w), (none * w).sum())
    # a sequence is accepted as well as a tensor
    torch.testing.assert_close(TF.sigmoid_focal_loss(x[:, None], t[:, None], pos_weight=[2.5]), a)
    z = torch.zeros(0, 3, requires_grad=True)
    out = TF.sigmoid_focal_loss(z, torch.zeros(0, 3), pos_weight=torch.ones(3))
    out.backward()
    assert out.item() == 0 and z.grad is not None


def test_integer_target_and_bf16_autocast():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, generator=g)
    t = (torch.rand(6, 3, generator=g) > 0.5).long()
    pw = torch.tensor([1.0, 3.0, 0.5])
    ref = TF.sigmoid_focal_loss(x, t.float(), pos_weight=pw)
    torch.testing.assert_close(TF.sigmoid_focal_loss(x, t, pos_weight=pw), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = TF.sigmoid_focal_loss(x.bfloat16(), t.float(), pos_weight=pw)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=1e-3)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1, 1.5), (0.7, 0.0)])
def test_gradcheck_input_target_and_pos_weight(alpha, gamma):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    t = (torch.rand(4, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    pw = (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: TF.sigmoid_focal_loss(a, b, alpha=alpha, gamma=gamma, reduction="none", pos_weight=c),
        (x, t, pw))


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1, 1.5), (0.7, 0.0), (0.4, 0.5)])
def test_gradcheck_fused_function_path(alpha, gamma):
    # only the logits require grad: the hand-derived backward of the torch Function
    g = torch.Generator().manual_seed(9)
    x = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    t = torch.rand(5, 3, generator=g, dtype=torch.float64)
    t[0] = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    pw = torch.tensor([0.5, 2.0, 5.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a: TF.sigmoid_focal_loss(a, t, alpha=alpha, gamma=gamma, reduction="none", pos_weight=pw), (x,))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
def test_function_and_autograd_paths_agree(gamma):
    from tailwise.classification.focal import _PosWeightFocalFunction, _sigmoid_focal_pos_weight

    g = torch.Generator().manual_seed(10)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64) * 5
    x[0] = torch.tensor([40.0, -40.0, 0.0, 1e-9], dtype=torch.float64)  # saturated sigmoid: m = 0
    t = torch.rand(64, 4, generator=g, dtype=torch.float64)
    t[:32] = t[:32].round()
    pw = torch.tensor([[0.0, 1.0, 3.0, 10.0]], dtype=torch.float64)
    up = torch.rand(64, 4, generator=g, dtype=torch.float64)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    la = _PosWeightFocalFunction.apply(a, t, pw, 0.25, gamma)
    lb = _sigmoid_focal_pos_weight(b, t, pw, 0.25, gamma)
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-300)
    (la * up).sum().backward()
    (lb * up).sum().backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-15)


def test_gradient_equals_autograd_of_kornia_formula_hard_labels():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    t = (torch.rand(12, 3, generator=g) > 0.5).double()
    pw = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    TF.sigmoid_focal_loss(a, t, alpha=0.25, gamma=2.0, reduction="sum", pos_weight=pw).backward()
    kornia_binary_focal(b, t, 0.25, 2.0, pw).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------ module, registry, compile
def test_module_buffer_index_targets_state_dict_and_registry():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(9, 3, generator=g)
    y = torch.randint(0, 3, (9,), generator=g)
    pw = torch.tensor([1.0, 4.0, 2.0])
    crit = tailwise.SigmoidFocalLoss(gamma=1.5, pos_weight=pw)
    want = TF.sigmoid_focal_loss(z, F.one_hot(y, 3).float(), gamma=1.5, pos_weight=pw)
    torch.testing.assert_close(crit(z, y), want)
    torch.testing.assert_close(crit(z, F.one_hot(y, 3).float()), want)
    assert torch.equal(crit.state_dict()["pos_weight"], pw)
    pw[0] = 100.0  # the module keeps its own copy
    assert crit.pos_weight[0].item() == 1.0
    other = tailwise.SigmoidFocalLoss(gamma=1.5, pos_weight=torch.zeros(3))
    other.load_state_dict(crit.state_dict())
    torch.testing.assert_close(other(z, y), want)
    built = tailwise.build_loss("sigmoid_focal", gamma=1.5, pos_weight=[1.0, 4.0, 2.0])
    torch.testing.assert_close(built(z, y), want)
    # without pos_weight nothing is registered: old state dicts still load
    assert "pos_weight" not in tailwise.SigmoidFocalLoss().state_dict()
    assert crit.double()(z.double(), y).dtype == torch.float64


def test_compile_fullgraph_traces_with_pos_weight():
    torch._dynamo.reset()
    x, t, pw = torch.randn(5, 3), torch.rand(5, 3), torch.tensor([1.0, 2.0, 3.0])
    fn = torch.compile(lambda a, b, c: TF.sigmoid_focal_loss(a, b, pos_weight=c), fullgraph=True, backend="eager")
    torch.testing.assert_close(fn(x, t, pw), TF.sigmoid_focal_loss(x, t, pos_weight=pw))


# ------------------------------------------------------------------ bad inputs
def test_bad_pos_weight_raises_naming_the_argument():
    x, t = torch.randn(4, 3), torch.rand(4, 3)
    with pytest.raises(ValueError, match=r"pos_weight must broadcast.*got shape \(4,\)"):
        TF.sigmoid_focal_loss(x, t, pos_weight=torch.ones(4))
    with pytest.raises(ValueError, match="pos_weight must broadcast"):  # would grow the loss
        TF.sigmoid_focal_loss(x, t, pos_weight=torch.ones(2, 4, 3))
    with pytest.raises(ValueError, match="pos_weight must be finite and non-negative"):
        TF.sigmoid_focal_loss(x, t, pos_weight=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="pos_weight must be finite and non-negative"):
        TF.sigmoid_focal_loss(x, t, pos_weight=torch.tensor([1.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match="pos_weight must be finite and non-negative"):
        TF.sigmoid_focal_loss(x, t, pos_weight=torch.tensor(float("inf")))
    with pytest.raises(TypeError, match="pos_weight"):
        TF.sigmoid_focal_loss(x, t, pos_weight=torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="pos_weight"):
        TF.sigmoid_focal_loss(x, t, pos_weight="balanced")
    with pytest.raises(ValueError, match="pos_weight must be finite and non-negative"):
        tailwise.SigmoidFocalLoss(pos_weight=torch.tensor([-2.0]))
    with pytest.raises(ValueError, match="pos_weight must broadcast"):
        tailwise.SigmoidFocalLoss(pos_weight=torch.ones(4))(x, t)


def test_pos_weight_value_check_is_a_device_assert_off_the_host():
    x, t = torch.randn(4, 3), torch.rand(4, 3)
    with _device_paths():
        with pytest.raises(RuntimeError, match="pos_weight must be finite and non-negative"):
            TF.sigmoid_focal_loss(x, t, pos_weight=torch.tensor([1.0, -1.0, 1.0]))
        # a valid weight passes the assert
        assert torch.isfinite(TF.sigmoid_focal_loss(x, t, pos_weight=torch.tensor([1.0, 2.0, 1.0])))
        with tailwise.validation("full"):
            with pytest.raises(ValueError, match="pos_weight must be finite and non-negative"):
                TF.sigmoid_focal_loss(x, t, pos_weight=torch.tensor([1.0, -1.0, 1.0]))


def test_host_pos_weight_is_converted_once_per_device():
    """A list (or a CPU tensor) given to the functional on an accelerator is validated and copied
    once, then served from the per-device cache (``meta`` stands in for CUDA, as in the contract
    suite's host-to-device check)."""
    from test_contract import _refuse_host_to_device

    from tailwise.classification.focal import _check_pos_weight

    x = torch.randn(4, 3)
    assert _check_pos_weight([1.0, 2.0, 3.0], x) is _check_pos_weight([1.0, 2.0, 3.0], x)
    cpu_pw = torch.tensor([1.0, 2.0, 3.0])
    xm = torch.randn(4, 3, device="meta", requires_grad=True)
    tm = torch.rand(4, 3, device="meta")
    for pw in ([1.0, 2.0, 3.0], cpu_pw):
        TF.sigmoid_focal_loss(xm, tm, pos_weight=pw)  # warm-up fills the cache
        with _refuse_host_to_device():
            loss = TF.sigmoid_focal_loss(xm, tm, pos_weight=pw)
            loss.backward()
        assert loss.device.type == "meta"
    # a tensor already on the device is used as is
    with _refuse_host_to_device():
        TF.sigmoid_focal_loss(xm, tm, pos_weight=torch.ones(3, device="meta")).backward()
    # the cached copy still rejects an input it does not broadcast to
    with pytest.raises(ValueError, match="pos_weight must broadcast"):
        TF.sigmoid_focal_loss(torch.randn(4, 5), torch.rand(4, 5), pos_weight=[1.0, 2.0, 3.0])
