"""Weights have two names, ``sample_weight`` and ``class_weight``; a bare ``weight=`` raises."""

import inspect

import pytest
import torch
import torch.nn.functional as F

import tailwise
import tailwise._base
import tailwise.functional as TF
from tailwise.registry import get_loss_class, list_losses

BOTH = r"(?s)class_weight=.*sample_weight="


# losses whose `weight` is a classifier matrix (F.linear's name), not a loss weight
LAYER_WEIGHT = {"linear_cross_entropy_loss", "linear_cross_entropy"}


def _functional_losses():
    return sorted(n for n in dir(TF) if n.endswith("_loss") and callable(getattr(TF, n)) and n not in LAYER_WEIGHT)


def _weighted_functional_losses():
    """Functional losses that take weights or a reduction (a loss with neither, e.g. a driver
    loss of two vectors, rejects weight= with Python's plain TypeError)."""
    keys = {"sample_weight", "class_weight", "reduction"}
    return [n for n in _functional_losses()
            if keys & set(inspect.signature(inspect.unwrap(getattr(TF, n))).parameters)]


def test_cross_entropy_weight_keyword_raises_naming_both():
    z, y = torch.randn(3, 3), torch.tensor([0, 1, 2])
    with pytest.raises(TypeError, match=BOTH):
        TF.cross_entropy_loss(z, y, weight=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match=BOTH):
        tailwise.CrossEntropyLoss(weight=torch.ones(3))
    with pytest.raises(TypeError, match=BOTH):
        tailwise.build_loss("cross_entropy", weight=torch.ones(3))
    with pytest.raises(TypeError, match=BOTH):
        tailwise.CrossEntropyLoss()(z, y, weight=torch.ones(3))


@pytest.mark.parametrize("name", _weighted_functional_losses())
def test_every_functional_loss_rejects_bare_weight(name):
    fn = getattr(TF, name)
    # the guard fires before any argument is looked at
    with pytest.raises(TypeError, match=BOTH):
        fn(torch.zeros(2, 2), torch.zeros(2, 2), weight=torch.ones(2))


def test_no_functional_loss_has_a_weight_parameter():
    for name in _functional_losses():
        params = inspect.signature(getattr(TF, name)).parameters
        assert "weight" not in params, name


@pytest.mark.parametrize("name", [n for n in list_losses() if n not in LAYER_WEIGHT])
def test_every_loss_module_rejects_bare_weight(name):
    cls = get_loss_class(name)
    if issubclass(cls, tailwise._base.Loss):  # WarmupBlend wraps two losses: no weights of its own
        with pytest.raises(TypeError, match=BOTH):
            cls(weight=torch.ones(2))
    forward = inspect.unwrap(cls.forward)
    assert "weight" not in inspect.signature(forward).parameters, name
    with pytest.raises(TypeError, match=BOTH):
        cls.forward(None, torch.zeros(2, 2), torch.zeros(2), weight=torch.ones(2))


def test_class_weight_mean_divides_by_targets_weights_like_torch():
    torch.manual_seed(0)
    z, y = torch.randn(3, 3), torch.tensor([0, 1, 1])
    cw = torch.tensor([0.2, 3.0, 1.0])
    ref = F.cross_entropy(z, y, weight=cw)
    torch.testing.assert_close(TF.cross_entropy_loss(z, y, class_weight=cw), ref)
    torch.testing.assert_close(tailwise.CrossEntropyLoss(class_weight=cw)(z, y), ref)
    # the case: N == C, the old per-sample reading gave a different number silently
    per_sample = (F.cross_entropy(z, y, reduction="none") * cw).mean()
    assert not torch.allclose(ref, per_sample)
    torch.testing.assert_close(TF.cross_entropy_loss(z, y, sample_weight=cw), per_sample)


def test_sample_weight_mean_divides_by_count():
    loss = TF.mse_loss(torch.tensor([1.0, 2.0]), torch.zeros(2), sample_weight=torch.tensor([2.0, 0.0]))
    assert loss.item() == pytest.approx(1.0)  # (2 * 1 + 0 * 4) / 2
    with pytest.raises(ValueError, match="sample_weight must be broadcastable"):
        TF.mse_loss(torch.ones(2), torch.zeros(2), sample_weight=torch.ones(3))


def test_layer_weight_named_weight_is_left_alone():
    """LinearCrossEntropyLoss takes the classifier's ``weight`` matrix (F.linear's name)."""
    torch.manual_seed(0)
    x, w, y = torch.randn(6, 4), torch.randn(3, 4), torch.randint(0, 3, (6,))
    ref = F.cross_entropy(x @ w.T, y)
    torch.testing.assert_close(TF.linear_cross_entropy_loss(x, w, y), ref)
    torch.testing.assert_close(tailwise.build_loss("linear_cross_entropy")(x, weight=w, target=y), ref)
