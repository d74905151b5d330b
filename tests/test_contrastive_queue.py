"""MemoryQueue: FIFO wrap-around, labels, balanced mode, state_dict."""

import pytest
import torch

from tailwise import MemoryQueue


def test_fifo_wraparound_and_views():
    q = MemoryQueue(5, 2)
    assert len(q) == 0 and q.keys.shape == (0, 2)
    a = torch.arange(6.0).view(3, 2)
    q.enqueue(a, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(q.keys, a)
    assert q.labels.tolist() == [0, 1, 2]
    b = torch.arange(100.0, 108.0).view(4, 2)
    q.enqueue(b)  # no labels -> -1; wraps: slots 3, 4, 0, 1
    assert len(q) == 5 and int(q.ptr) == 2
    torch.testing.assert_close(q.keys, torch.stack([b[2], b[3], a[2], b[0], b[1]]))
    assert q.labels.tolist() == [-1, -1, 2, -1, -1]
    big = torch.arange(24.0).view(12, 2)
    q.enqueue(big)  # more than capacity: only the newest 5 survive
    assert sorted(q.keys[:, 0].tolist()) == big[-5:, 0].tolist()


def test_enqueue_detaches_and_validates():
    q = MemoryQueue(4, 3)
    x = torch.randn(2, 3, requires_grad=True)
    q.enqueue(x * 2)
    assert not q.keys.requires_grad
    with pytest.raises(ValueError, match=r"keys must have shape \(B, 3\)"):
        q.enqueue(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        q.enqueue(torch.randn(2, 3), torch.tensor([1]))
    with pytest.raises(ValueError, match="size must be a positive int"):
        MemoryQueue(0, 3)


def test_balanced_queue_keeps_per_class_slots():
    q = MemoryQueue(2, 1, num_classes=3, balanced=True)
    keys = torch.arange(7.0)[:, None]
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 0])
    q.enqueue(keys, labels)
    # class 0 got 4 keys -> its 2 slots hold the newest two (2, 6); class 1 has one of 2 slots filled
    assert len(q) == 5
    per_class = {c: sorted(q.keys[q.labels == c, 0].tolist()) for c in range(3)}
    assert per_class == {0: [2.0, 6.0], 1: [3.0], 2: [4.0, 5.0]}
    q.enqueue(torch.tensor([[9.0]]), torch.tensor([0]))  # FIFO within class 0: replaces 2
    assert sorted(q.keys[q.labels == 0, 0].tolist()) == [6.0, 9.0]
    with pytest.raises(ValueError, match="needs labels"):
        q.enqueue(torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        q.enqueue(torch.ones(1, 1), torch.tensor([3]))


@pytest.mark.parametrize("balanced", [False, True])
def test_state_dict_round_trip(balanced):
    kw = dict(num_classes=3, balanced=True) if balanced else {}
    q = MemoryQueue(4, 2, **kw)
    q.enqueue(torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0]))
    r = MemoryQueue(4, 2, **kw)
    r.load_state_dict(q.state_dict())
    torch.testing.assert_close(r.keys, q.keys)
    torch.testing.assert_close(r.labels, q.labels)
    assert torch.equal(r.ptr, q.ptr)
    new = torch.randn(3, 2)
    q.enqueue(new, torch.tensor([2, 2, 1]))
    r.enqueue(new, torch.tensor([2, 2, 1]))
    torch.testing.assert_close(r.keys, q.keys)


def test_queue_feeds_info_nce_module():
    import torch.nn.functional as F
    import tailwise
    q = MemoryQueue(8, 4)
    q.enqueue(F.normalize(torch.randn(8, 4), dim=-1))
    z = F.normalize(torch.randn(3, 2, 4), dim=-1)
    crit = tailwise.InfoNCELoss()
    torch.testing.assert_close(crit(z, q), tailwise.functional.info_nce_loss(z, q.keys))


def test_keys_are_a_snapshot_so_enqueue_before_backward_is_safe():
    import torch.nn.functional as F
    from tailwise.functional import info_nce_loss
    q = MemoryQueue(4, 3)
    q.enqueue(F.normalize(torch.randn(4, 3), dim=-1))
    z = F.normalize(torch.randn(2, 2, 3), dim=-1).requires_grad_()
    keys = q.keys
    loss = info_nce_loss(z, keys)
    q.enqueue(F.normalize(torch.randn(4, 3), dim=-1))  # MoCo order: enqueue, then backward
    loss.backward()
    z2 = z.detach().clone().requires_grad_()
    info_nce_loss(z2, keys).backward()
    torch.testing.assert_close(z.grad, z2.grad)
