"""Shared machinery: validation messages, reduction, precision, registry."""

import pytest
import torch
from torch import nn

import tailwise
from tailwise._precision import float32_compute, upcast
from tailwise._reduction import reduce_loss
from tailwise._validation import (check_class_counts, check_class_indices, check_finite, check_floating,
                                  check_positive, check_probability, check_reduction, check_same_shape,
                                  check_tensor, check_weight)
from tailwise.registry import _REGISTRY, build_loss, describe_losses, get_loss_class, list_losses, register_loss


# ---------------------------------------------------------------- reduction
def test_reduce_loss_modes_and_weights():
    loss = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert reduce_loss(loss, "mean").item() == 3.0
    assert reduce_loss(loss, "sum").item() == 12.0
    assert torch.equal(reduce_loss(loss, "none"), loss)
    w = torch.tensor([1.0, 0.0, 2.0, 0.5])
    assert reduce_loss(loss, "sum", w).item() == 1 + 0 + 6 + 3
    assert reduce_loss(loss, "mean", w).item() == pytest.approx(10 / 4)
    torch.testing.assert_close(reduce_loss(loss, "none", w), loss * w)


def test_reduce_loss_broadcast_weight():
    loss = torch.ones(2, 3)
    w = torch.tensor([[1.0], [3.0]])
    assert reduce_loss(loss, "sum", w).item() == 12.0
    with pytest.raises(ValueError, match=r"sample_weight must be broadcastable to the unreduced loss shape \(2, 3\)"):
        reduce_loss(loss, "sum", torch.ones(3, 2))


def test_reduce_loss_empty_batch_keeps_graph():
    x = torch.zeros(0, requires_grad=True)
    for reduction in ("mean", "sum"):
        out = reduce_loss(x * 2, reduction)
        assert out.item() == 0.0 and out.grad_fn is not None
        out.backward()
    assert x.grad.shape == (0,)


def test_reduce_loss_rejects_bad_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        reduce_loss(torch.ones(2), "avg")


# ---------------------------------------------------------------- validation
def test_check_tensor_messages():
    with pytest.raises(TypeError, match=r"pred must be a torch.Tensor, got a list of length 2"):
        check_tensor([1, 2], "pred")
    with pytest.raises(ValueError, match=r"boxes must be 2-D, got shape \(3,\)"):
        check_tensor(torch.ones(3), "boxes", ndim=2)
    with pytest.raises(ValueError, match=r"boxes must have last dimension 4, got shape \(3, 5\)"):
        check_tensor(torch.ones(3, 5), "boxes", last_dim=4)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        check_tensor(torch.ones(3), "logits", min_ndim=2)
    with pytest.raises(TypeError, match="pred must be a floating-point tensor, got dtype torch.int64"):
        check_floating(torch.ones(3, dtype=torch.long), "pred")
    with pytest.raises(ValueError, match=r"target must have the same shape as pred \(3,\), got \(4,\)"):
        check_same_shape(torch.ones(3), torch.ones(4), "pred", "target")


def test_check_finite_names_first_bad_index():
    x = torch.tensor([0.0, 1.0, float("nan"), float("inf")])
    with pytest.raises(ValueError, match=r"target must be finite, got nan at index 2"):
        check_finite(x, "target")
    check_finite(torch.ones(3), "target")


def test_scalar_checks():
    assert check_positive(2, "beta") == 2.0
    with pytest.raises(ValueError, match="beta must be > 0, got 0.0"):
        check_positive(0.0, "beta")
    with pytest.raises(TypeError, match="beta must be a real number"):
        check_positive("1", "beta")
    with pytest.raises(TypeError, match="gamma must be a real number"):
        check_positive(True, "gamma")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\)"):
        check_probability(1.0, "alpha", open_high=True)
    assert check_reduction("none") == "none"


def test_check_class_counts():
    out = check_class_counts([3, 1, 2], 3)
    assert out.dtype == torch.float64 and out.tolist() == [3.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="class_counts must have one entry per class \\(4\\), got 3"):
        check_class_counts([3, 1, 2], 4)
    with pytest.raises(ValueError, match="must be positive .* got 0 for class 1"):
        check_class_counts(torch.tensor([3, 0, 2]))
    assert check_class_counts(torch.tensor([3, 0, 2]), allow_zero=True)[1] == 0
    with pytest.raises(ValueError, match="must be non-negative, got -1.0 for class 2"):
        check_class_counts([3, 1, -1])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        check_class_counts([[1, 2]])
    with pytest.raises(TypeError, match="class_counts must hold real numbers"):
        check_class_counts(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="class_counts must be finite"):
        check_class_counts([1.0, float("inf")])


def test_check_class_indices():
    check_class_indices(torch.tensor([0, 2, -100]), 3, ignore_index=-100)
    with pytest.raises(ValueError, match=r"target must be class indices in \[0, 2\] \(or ignore_index=-100\), got 3"):
        check_class_indices(torch.tensor([0, 3]), 3, ignore_index=-100)
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        check_class_indices(torch.tensor([0.0, 1.0]), 3)


def test_check_weight():
    assert check_weight(None, torch.Size([3])) is None
    with pytest.raises(TypeError, match="weight must be a floating-point tensor"):
        check_weight(torch.ones(3, dtype=torch.long), torch.Size([3]))


# ---------------------------------------------------------------- precision
def test_float32_compute_upcasts_and_disables_autocast():
    seen = {}

    @float32_compute
    def fn(a, b=None):
        seen["dtypes"] = (a.dtype, b.dtype)
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return (a @ b).sum()

    a = torch.randn(4, 4, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(4, 4, dtype=torch.float16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(a, b=b)
    assert seen["dtypes"] == (torch.float32, torch.float32)
    assert seen["autocast"] is False
    assert out.dtype == torch.float32
    out.backward()
    assert a.grad.dtype == torch.bfloat16
    x64 = torch.ones(2, dtype=torch.float64)
    assert upcast(x64) is x64 and upcast(3) == 3


# ---------------------------------------------------------------- registry
def test_registry_round_trip_and_errors():
    @register_loss("tmp_test_loss")
    class TmpLoss(nn.Module):
        """A loss used only by this test."""

        def __init__(self, scale=1.0):
            super().__init__()
            self.scale = scale

    try:
        assert "tmp_test_loss" in list_losses()
        assert list_losses() == sorted(list_losses())
        built = build_loss("tmp_test_loss", scale=3.0)
        assert isinstance(built, TmpLoss) and built.scale == 3.0
        assert get_loss_class("tmp_test_loss") is TmpLoss
        assert describe_losses()["tmp_test_loss"] == "A loss used only by this test."
        with pytest.raises(ValueError, match="unknown loss 'tmp_test_los'; did you mean 'tmp_test_loss'"):
            build_loss("tmp_test_los")

        class Other(nn.Module):
            pass

        with pytest.raises(ValueError, match="already registered"):
            register_loss("tmp_test_loss")(Other)
    finally:
        _REGISTRY.pop("tmp_test_loss", None)
    with pytest.raises(ValueError, match="snake_case"):
        register_loss("Bad Name")
    with pytest.raises(TypeError, match="decorates nn.Module subclasses"):
        register_loss("not_a_module")(int)


def test_every_registered_loss_builds_with_defaults_or_says_why():
    """Every registry entry is a module class with a docstring; default-constructible ones build."""
    for name in list_losses():
        cls = get_loss_class(name)
        assert issubclass(cls, nn.Module)
        assert cls.__doc__ and cls.__doc__.strip(), f"{name} has no docstring"


def test_import_does_not_pull_optional_extras():
    import subprocess
    import sys
    # torch itself may import tqdm; what matters is that tailwise adds none of the extras
    code = ("import sys, torch; before = set(sys.modules); import tailwise; "
            "bad = [m for m in ('matplotlib', 'sklearn', 'tqdm', 'rich') "
            "if m in sys.modules and m not in before]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_public_namespaces():
    assert callable(tailwise.build_loss) and callable(tailwise.list_losses)
    assert hasattr(tailwise, "functional") and hasattr(tailwise, "distributed")
