"""BALLAD's balanced adapter: formula, frozen text features, training signal, errors."""

import pytest
import torch
import torch.nn.functional as F

import tailwise


def test_adapter_formula_and_cosine_range():
    torch.manual_seed(0)
    text = torch.randn(4, 8)
    ad = tailwise.BalancedAdapter(text)
    f = torch.randn(5, 8)
    a = ad.adapter.weight
    ref_f = F.normalize(0.2 * f @ a.T + 0.8 * f, dim=1)
    ref = 100 * ref_f @ F.normalize(text, dim=1).T
    torch.testing.assert_close(ad(f), ref)
    assert ad(f).abs().max() <= 100 + 1e-4
    # alpha = 0: no adaptation, zero-shot CLIP logits
    ad0 = tailwise.BalancedAdapter(text, alpha=0.0)
    torch.testing.assert_close(ad0(f), 100 * F.normalize(f, dim=1) @ F.normalize(text, dim=1).T)


def test_only_adapter_trains_and_state_dict():
    ad = tailwise.BalancedAdapter(torch.randn(3, 6))
    assert [n for n, p in ad.named_parameters()] == ["adapter.weight"]
    loss = F.cross_entropy(ad(torch.randn(4, 6)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert ad.adapter.weight.grad is not None
    assert "text_features" in ad.state_dict()


def test_errors():
    with pytest.raises(ValueError, match="text_features"):
        tailwise.BalancedAdapter(torch.randn(3))
    with pytest.raises(ValueError, match="alpha"):
        tailwise.BalancedAdapter(torch.randn(3, 4), alpha=1.5)
    with pytest.raises(ValueError, match="features must have 4"):
        tailwise.BalancedAdapter(torch.randn(3, 4))(torch.randn(2, 5))
