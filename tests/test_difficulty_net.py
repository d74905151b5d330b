"""Difficulty-Net: network, weights, driver loss, the meta step in both modes, module state."""

import copy

import pytest
import torch
import torch.nn.functional as F

import tailwise
from tailwise.functional import difficulty_net_loss


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.fc2 = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def naive_step(model, net, acc, x, y, xm, ym, lr, lam, meta_grad):
    """The official loop re-expressed: copy the model, one manual SGD step, meta loss, backward.

    Returns the gradient the meta loss puts on the network's parameters."""
    cpy = copy.deepcopy(model)
    d = net(acc)
    target = 1 - acc / (acc.sum() + 1e-12)
    driver = ((d - target) ** 2).mean()
    w = d / d.sum() * d.numel()
    if not meta_grad:
        w = torch.tensor(w.detach().tolist())  # the official code's torch.tensor(...) detaches
    loss = torch.mean(F.cross_entropy(cpy(x), y, reduction="none") * w[y])
    params = list(cpy.parameters())
    grads = torch.autograd.grad(loss, params, create_graph=meta_grad)
    names = [n for n, _ in cpy.named_parameters()]
    new = {n: p - lr * g for n, p, g in zip(names, params, grads)}
    out = torch.func.functional_call(cpy, new, (xm,))
    meta = F.cross_entropy(out, ym) + lam * driver
    return torch.autograd.grad(meta, list(net.parameters()))


@pytest.mark.parametrize("meta_grad", [False, True])
def test_meta_step_gradient_matches_transcription(meta_grad):
    torch.manual_seed(0)
    model, net = TinyNet(), tailwise.DifficultyNet(3, hidden=8)
    acc = torch.tensor([0.9, 0.4, 0.1])
    x, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    xm, ym = torch.randn(6, 5), torch.randint(0, 3, (6,))
    expected = naive_step(model, net, acc, x, y, xm, ym, 0.1, 0.3, meta_grad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    old = [p.detach().clone() for p in net.parameters()]
    w = tailwise.difficulty_net_step(model, net, opt, acc, x, y, xm, ym, lr=0.1, lam=0.3, meta_grad=meta_grad)
    # with SGD(lr=1) the parameter change is minus the gradient
    for p0, p1, g in zip(old, net.parameters(), expected):
        torch.testing.assert_close(p0 - p1.detach(), g, rtol=1e-5, atol=1e-7)
    # the classifier's parameters and BatchNorm statistics are untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(w, tailwise.difficulty_net_weights(net(acc)).detach())


def test_code_mode_learns_from_driver_only():
    torch.manual_seed(1)
    model, net = TinyNet(), tailwise.DifficultyNet(3, hidden=8)
    acc = torch.tensor([0.7, 0.5, 0.3])
    x, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    g_code = naive_step(model, net, acc, x, y, x, y, 0.1, 0.3, False)
    d = net(acc)
    g_driver = torch.autograd.grad(0.3 * tailwise.difficulty_net_driver_loss(d, acc), list(net.parameters()))
    for a, b in zip(g_code, g_driver):
        torch.testing.assert_close(a, b)


def test_weights_driver_and_loss_values():
    d = torch.tensor([0.1, 0.3, 0.6])
    torch.testing.assert_close(tailwise.difficulty_net_weights(d), torch.tensor([0.3, 0.9, 1.8]))
    acc = torch.tensor([0.5, 0.25, 0.25])
    target = torch.tensor([0.5, 0.75, 0.75])
    assert tailwise.difficulty_net_driver_loss(d, acc).item() == pytest.approx(((d - target) ** 2).mean().item())
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    w = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    ref = (F.cross_entropy(z, y, reduction="none") * w[y]).mean()
    torch.testing.assert_close(difficulty_net_loss(z, y, w), ref)
    assert torch.autograd.gradcheck(lambda t: difficulty_net_loss(t, y, w), (z,))


def test_module_state_and_errors():
    crit = tailwise.build_loss("difficulty_net", num_classes=3, hidden=4)
    crit.set_accuracy([0.2, 0.5, 0.8])
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(crit(z, y), difficulty_net_loss(z, y, crit.class_weights()))
    other = tailwise.DifficultyNetLoss(num_classes=3, hidden=4)
    other.load_state_dict(crit.state_dict())
    torch.testing.assert_close(other(z, y), crit(z, y))
    with pytest.raises(ValueError, match="accuracy"):
        crit.set_accuracy([0.1, 0.2])
    with pytest.raises(ValueError, match="accuracy must have 3"):
        crit.net(torch.rand(4))
    with pytest.raises(ValueError, match="class_weight"):
        difficulty_net_loss(z, y, torch.ones(2))
    with pytest.raises(ValueError, match="num_classes"):
        tailwise.DifficultyNet(0)
    e = torch.zeros(0, 3, requires_grad=True)
    out = crit(e, torch.zeros(0, dtype=torch.long))
    assert out.item() == 0.0 and out.grad_fn is not None
