"""2-rank gloo: the Equalization Losses' statistics, losses and logits gradients equal one process."""

import pytest
import torch

from dist_harness import run_distributed, shard
from tailwise.classification.eqlv2 import EQLv2Loss
from tailwise.classification.equalized_focal import EqualizedFocalLoss
from tailwise.classification.softmax_eql import SoftmaxEQLLoss

pytestmark = pytest.mark.distributed

C, STEPS = 5, 3


def _makers():
    return {"eqlv2": lambda: EQLv2Loss(C), "softmax_eql": lambda: SoftmaxEQLLoss(C),
            "efl": lambda: EqualizedFocalLoss(C), "eqlv2_bg": lambda: EQLv2Loss(C - 1, use_background_column=True)}


def _run(crit, logits, labels, rank, world):
    out = []
    for z, y in zip(logits, labels):
        local = shard(z, rank, world).clone().requires_grad_(True)
        loss = crit(local, shard(y, rank, world))
        loss.backward()
        out.append({"loss": loss.detach(), "grad": local.grad, "pos": crit.pos_grad.clone(),
                    "neg": crit.neg_grad.clone()})
    return out


def _worker(rank, world, logits, labels):
    torch.manual_seed(0)
    return {name: _run(make(), logits, labels, rank, world) for name, make in _makers().items()}


def test_two_ranks_equal_full_batch():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(8, C, generator=g) * 2 for _ in range(STEPS)]
    labels = [torch.randint(0, C, (8,), generator=g) for _ in range(STEPS)]
    labels[0][:4] = 0  # skewed first step: statistics differ strongly across classes
    res = run_distributed(_worker, 2, logits, labels)
    for name, make in _makers().items():
        full = _run(make(), logits, labels, 0, 1)
        for step in range(STEPS):
            r0, r1, ref = res[0][name][step], res[1][name][step], full[step]
            for r in (r0, r1):  # every rank holds the global statistics
                torch.testing.assert_close(r["pos"], ref["pos"])
                torch.testing.assert_close(r["neg"], ref["neg"])
            torch.testing.assert_close((r0["loss"] + r1["loss"]) / 2, ref["loss"])
            # DDP averages over ranks: each rank's local-mean gradient / world == full-batch gradient
            torch.testing.assert_close(torch.cat([r0["grad"], r1["grad"]]) / 2, ref["grad"])
        assert full[-1]["neg"].sum() > 0
