"""2 gloo ranks with UNEQUAL batch sizes == one process on the full batch (loss, input and
parameter gradients after DDP-style averaging, and the queue contents)."""

import torch

import tailwise
from dist_harness import run_distributed

SIZES = (7, 13)  # unequal shards


def _losses():
    return [tailwise.SmoothAPLoss(0.3, num_classes=3, queue_size=16),
            tailwise.RecallAtQuantileLoss(0.7, 0.3, num_classes=3, queue_size=16),
            tailwise.PAUCAtBudgetLoss(0.0, 0.4, 0.3, num_classes=3, queue_size=16),
            tailwise.PAUCAtBudgetLoss(0.1, 0.6, surrogate="squared_hinge", num_classes=3, queue_size=16)]


def _run(feats_list, labels_list, rank=None):
    """Two steps (the second one ranks against the queue); returns losses and parameter grads."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3).double()
    out = []
    for loss_fn in _losses():
        loss_fn.double()
        vals, grads = [], []
        for feats, labels in zip(feats_list, labels_list):
            lin.zero_grad()
            loss = loss_fn(lin(feats), labels)
            loss.backward()
            g = torch.cat([p.grad.flatten() for p in lin.parameters()])
            if rank is not None:  # DDP averages parameter gradients over ranks
                torch.distributed.all_reduce(g)
                g = g / torch.distributed.get_world_size()
            vals.append(loss.detach())
            grads.append(g)
        out.append({"loss": torch.stack(vals), "grad": torch.stack(grads), "queue": loss_fn.queue.keys.clone()})
    return out


def _worker(rank, world, feats_list, labels_list):
    lo = sum(SIZES[:rank])
    hi = lo + SIZES[rank]
    return _run([f[lo:hi] for f in feats_list], [y[lo:hi] for y in labels_list], rank=rank)


def test_two_ranks_unequal_sizes_equal_full_batch():
    g = torch.Generator().manual_seed(3)
    n = sum(SIZES)
    feats = [torch.randn(n, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    labels = [torch.randint(0, 3, (n,), generator=g) for _ in range(2)]
    labels[1][::5] = -100
    full = _run(feats, labels)
    results = run_distributed(_worker, 2, feats, labels)
    for res in results:
        for want, got in zip(full, res):
            torch.testing.assert_close(got["loss"], want["loss"])
            torch.testing.assert_close(got["grad"], want["grad"])
            torch.testing.assert_close(got["queue"], want["queue"])
