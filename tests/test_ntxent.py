"""pytorch-metric-learning NTXentLoss semantics: explicit per-pair loops as in PML's own tests."""

import math

import pytest
import torch
import torch.nn.functional as F

import tailwise
from tailwise.functional import ntxent_loss


def pml_loop(emb, labels, ref=None, ref_labels=None, t=0.07):
    """PML's test_ntxent_loss reference: loop over positive pairs, negatives of the anchor only."""
    emb = F.normalize(emb, dim=1)
    self_ref = ref is None
    ref = emb if self_ref else F.normalize(ref, dim=1)
    ref_labels = labels if self_ref else ref_labels
    losses = []
    for a in range(len(emb)):
        for p in range(len(ref)):
            if (self_ref and a == p) or labels[a] != ref_labels[p]:
                continue
            num = math.exp(torch.dot(emb[a], ref[p]).item() / t)
            den = num + sum(math.exp(torch.dot(emb[a], ref[n]).item() / t)
                            for n in range(len(ref)) if ref_labels[n] != labels[a])
            losses.append(-math.log(num / den))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_matches_pml_loop_with_several_positives(t):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(9, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # up to 2 positives per anchor; class 3 alone
    ours = ntxent_loss(emb, labels, temperature=t, normalize=True)
    assert ours.item() == pytest.approx(pml_loop(emb, labels, t=t), rel=1e-9)


def test_reference_set_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(6, 3, generator=g, dtype=torch.float64)
    labels, ref_labels = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 1, 2, 2, 1])
    ours = ntxent_loss(emb, labels, ref_features=ref, ref_labels=ref_labels, temperature=0.2, normalize=True)
    assert ours.item() == pytest.approx(pml_loop(emb.detach(), labels, ref, ref_labels, t=0.2), rel=1e-9)
    assert torch.autograd.gradcheck(
        lambda e: ntxent_loss(e, labels, ref_features=ref, ref_labels=ref_labels, normalize=True), (emb,))


def test_differs_from_supcon_and_edge_cases():
    z = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    sc = tailwise.functional.supcon_loss(z, y, temperature=0.07, base_temperature=0.07)
    assert not torch.isclose(ntxent_loss(z, y), sc)  # the other positives leave the denominator
    # no negatives at all: every pair scores -log 1 = 0; no positives: 0 with a graph
    zr = z.clone().requires_grad_(True)
    assert ntxent_loss(zr, torch.zeros(6, dtype=torch.long)).item() == 0.0
    out = ntxent_loss(zr, torch.arange(6))
    assert out.item() == 0.0 and out.grad_fn is not None
    with pytest.raises(ValueError, match="together"):
        ntxent_loss(z, y, ref_features=z)
    with pytest.raises(ValueError, match="normalised"):
        ntxent_loss(z * 3, y)
    with pytest.raises(ValueError, match="labels"):
        ntxent_loss(z, y[:3])
    crit = tailwise.build_loss("ntxent", normalize=True)
    torch.testing.assert_close(crit(z * 3, y), ntxent_loss(z, y))
