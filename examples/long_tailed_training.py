"""Plain PyTorch on long-tailed Fashion-MNIST: cross-entropy vs Balanced Softmax vs CE with a
class-balanced sampler.

    python examples/long_tailed_training.py            # ~1 minute on a laptop CPU
    python examples/long_tailed_training.py --smoke    # a few seconds (what CI runs)

The training set follows an exponential long tail (imbalance factor 100: the head class has 100x
the samples of the tail class), the test set is balanced. Cross-entropy favours the head: its
few-shot accuracy is low. Balanced Softmax (``tailwise.BalancedSoftmaxLoss``: CE on
``logits + log prior``, Ren et al. 2020) and class-balanced sampling
(``tailwise.data.ClassBalancedSampler``, Kang et al. 2020) trade a little head accuracy for
the tail. Falls back to scikit-learn's digits when Fashion-MNIST is not installed.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import tailwise
from tailwise.data import ClassBalancedSampler

from _common import evaluate, load_long_tailed, mlp


def train(method: str, data, epochs: int, batch_size: int, seed: int):
    torch.manual_seed(seed)
    model = mlp(data.x_train.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dataset = TensorDataset(data.x_train, data.y_train)
    if method == "ce+cb_sampler":
        sampler = ClassBalancedSampler(data.y_train, seed=seed)  # whole epoch, one process
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    else:
        sampler = None
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
    if method == "balanced_softmax":
        criterion = tailwise.BalancedSoftmaxLoss(class_counts=data.class_counts)
    else:
        criterion = tailwise.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)  # a new class-balanced draw every epoch
        for x, y in loader:
            opt.zero_grad()
            criterion(model(x), y).backward()
            opt.step()
    return evaluate(model, data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data and one epoch (seconds)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(4, torch.get_num_threads()))
    data = load_long_tailed(smoke=args.smoke, seed=args.seed)
    epochs = args.epochs or (1 if args.smoke else 15)
    print(f"{data.name}-LT: {len(data.y_train)} training images, class counts {data.class_counts.tolist()}, "
          f"{len(data.y_test)} balanced test images; many > {data.many}, few < {data.few} training images")
    print(f"{'method':<18} {'acc':>6} {'bal_acc':>8} {'many':>6} {'medium':>7} {'few':>6} {'time':>6}")
    for method in ("ce", "balanced_softmax", "ce+cb_sampler"):
        t0 = time.perf_counter()
        r = train(method, data, epochs, batch_size=128, seed=args.seed)
        print(f"{method:<18} {r['acc']:6.3f} {r['bal_acc']:8.3f} {r['many']:6.3f} {r['medium']:7.3f} "
              f"{r['few']:6.3f} {time.perf_counter() - t0:5.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
