"""CP2: instance + dense terms vs a transcription of the official forward/train, views, queue."""

import pytest
import torch
import torch.nn.functional as F

import tailwise
from tailwise.functional import cp2_loss


def official(q, k, mask_q, mask_k, queue, T=0.2):
    """wangf3014/CP2 CP2_MOCO.forward + the loss in main.train, with queue (C, K) as the code."""
    n = q.shape[0]
    mq, mk = mask_q.reshape(n, -1), mask_k.reshape(n, -1)
    q = q.reshape(n, q.shape[1], -1)
    qd = F.normalize(q, dim=1)
    q_pos = F.normalize(torch.einsum("ncx,nx->nc", qd, mq), dim=1)
    with torch.no_grad():
        k = k.reshape(n, k.shape[1], -1)
        kd = F.normalize(k, dim=1)
        k_pos = F.normalize(torch.einsum("ncx,nx->nc", kd, mk), dim=1)
    logits_dense = torch.einsum("ncx,ncy->nxy", qd, kd)
    labels_dense = torch.einsum("nx,ny->nxy", mq, mk).reshape(n, -1)
    l_pos = torch.einsum("nc,nc->n", q_pos, k_pos).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", q_pos, queue)
    logits = torch.cat([l_pos, l_neg], 1) / T
    loss_ins = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long))
    out = (-1.0 * torch.log_softmax(logits_dense, dim=1)).reshape(n, -1)
    loss_dense = torch.mean((out * labels_dense).sum(1) / labels_dense.sum(1))
    return loss_ins + 0.2 * loss_dense


def _case(g, b=3, c=6, h=5, w=4, kq=11):
    q = torch.randn(b, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    mq = (torch.rand(b, h, w, generator=g) > 0.5).double()
    mk = (torch.rand(b, h, w, generator=g) > 0.5).double()
    mq[:, 0, 0] = 1
    mk[:, 0, 0] = 1
    queue = F.normalize(torch.randn(kq, c, generator=g, dtype=torch.float64), dim=1)
    return q, k, mq, mk, queue


def test_matches_official():
    q, k, mq, mk, queue = _case(torch.Generator().manual_seed(0))
    ours = cp2_loss(q, k, mq, mk, queue)
    ref = official(q, k, mq, mk, queue.T)
    torch.testing.assert_close(ours, ref)
    g1, = torch.autograd.grad(ours, q)
    g2, = torch.autograd.grad(ref, q)
    torch.testing.assert_close(g1, g2)


def test_gradcheck_and_key_gets_no_gradient():
    q, k, mq, mk, queue = _case(torch.Generator().manual_seed(1), b=2, c=3, h=3, w=2, kq=4)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: cp2_loss(x, k, mq, mk, queue), (q,))
    cp2_loss(q, k, mq, mk, queue).backward()
    assert k.grad is None


def test_dense_softmax_axis_is_query_pixels():
    # with a single foreground key pixel, the dense term is -log softmax over ALL query pixels
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 4, 2, 3, generator=g, dtype=torch.float64)
    k = torch.randn(1, 4, 2, 3, generator=g, dtype=torch.float64)
    mq = torch.zeros(1, 2, 3, dtype=torch.float64)
    mq[0, 0, 1] = 1
    mk = torch.zeros(1, 2, 3, dtype=torch.float64)
    mk[0, 1, 2] = 1
    qn, kn = F.normalize(q.flatten(2), dim=1)[0], F.normalize(k.flatten(2), dim=1)[0]
    s = qn.T @ kn[:, 5]  # similarities of key pixel 5 to the 6 query pixels
    expected = -torch.log_softmax(s, 0)[1]
    dense_only = cp2_loss(q, k, mq, mk, None, dense_weight=1.0)
    torch.testing.assert_close(dense_only, expected)


def test_empty_mask_is_finite_and_errors():
    q, k, mq, mk, queue = _case(torch.Generator().manual_seed(3))
    mq[1] = 0
    assert torch.isfinite(cp2_loss(q, k, mq, mk, queue))
    with pytest.raises(ValueError, match="mask_q"):
        cp2_loss(q, k, mq[:, :2], mk, queue)
    with pytest.raises(ValueError, match="k_dense"):
        cp2_loss(q, k[:, :2], mq, mk, queue)
    with pytest.raises(ValueError, match="queue"):
        cp2_loss(q, k, mq, mk, torch.randn(4, 2, dtype=torch.float64))


def test_copy_paste_views_and_module_queue():
    g = torch.Generator().manual_seed(4)
    fg, bg = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    v = tailwise.copy_paste_views(fg, fg, bg, bg, stride=8, generator=g)
    assert v.mask_q.shape == (3, 4, 4)
    full = (v.view_q == fg) & (v.view_q != bg)
    frac = full.all(1).float().mean((1, 2))
    assert torch.all((frac > 0.4) & (frac < 0.9))  # area 0.5-0.8 of the image (rounding)
    crit = tailwise.CP2Loss(queue_size=6, dim=5)
    q, k = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    m = torch.ones(2, 4, 4)
    crit(q, k, m, m)
    assert len(crit.queue) == 2
    crit(q, k, m, m)
    assert len(crit.queue) == 4
    torch.testing.assert_close(crit.queue.keys[:2], tailwise.cp2_pool(k, m))
    with pytest.raises(ValueError, match="stride"):
        tailwise.copy_paste_views(fg, fg, bg, bg, stride=0)


def test_empty_batch_gives_zero_with_grad():
    q = torch.zeros(0, 4, 3, 3, requires_grad=True)
    m = torch.zeros(0, 3, 3)
    out = cp2_loss(q, torch.zeros(0, 4, 3, 3), m, m, F.normalize(torch.randn(5, 4), dim=1))
    assert out.item() == 0.0 and out.grad_fn is not None


def _cp2_worker(rank, world, q, k, m):
    from dist_harness import shard
    crit = tailwise.CP2Loss(queue_size=16, dim=4)
    losses, grads = [], []
    for step in range(2):  # the second step sees the keys both ranks enqueued in the first
        qs = shard(q[step], rank, world).clone().requires_grad_(True)
        loss = crit(qs, shard(k[step], rank, world), shard(m[step], rank, world), shard(m[step], rank, world))
        loss.backward()
        losses.append(loss.detach())
        grads.append(qs.grad)
    return {"keys": crit.queue.keys, "losses": losses, "grads": grads}


@pytest.mark.distributed
def test_cp2_queue_two_ranks_equal_one_process():
    from dist_harness import run_distributed
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 6, 4, 3, 3, generator=g)
    k = torch.randn(2, 6, 4, 3, 3, generator=g)
    m = (torch.rand(2, 6, 3, 3, generator=g) > 0.3).float()
    res = run_distributed(_cp2_worker, 2, q, k, m)
    full = tailwise.CP2Loss(queue_size=16, dim=4)
    for step in range(2):
        qf = q[step].clone().requires_grad_(True)
        loss = full(qf, k[step], m[step], m[step])
        loss.backward()
        # per-sample mean losses: the average of the two equal halves is the full-batch loss
        torch.testing.assert_close((res[0]["losses"][step] + res[1]["losses"][step]) / 2, loss.detach())
        torch.testing.assert_close(torch.cat([r["grads"][step] for r in res]) / 2, qf.grad)
    for r in res:  # every rank holds the same queue: all-gathered keys in rank order
        torch.testing.assert_close(r["keys"], full.queue.keys)
