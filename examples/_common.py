"""Shared pieces of the examples: a long-tailed image dataset, a small MLP, and an evaluation.

Data: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``, or ``$FASHION_MNIST_DIR``) when present, otherwise
scikit-learn's bundled 8x8 digits. No download. The training split is cut to a CIFAR-LT style
exponential long tail with :func:`tailwise.data.long_tailed_indices`; the test split stays
balanced, so mean per-class accuracy and many/medium/few-shot accuracy are meaningful.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from torch import nn

import tailwise
from tailwise.data import long_tailed_indices

FMNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


@dataclass
class LTData:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_counts: torch.Tensor
    many: int
    few: int


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _fashion_mnist():
    x_tr = _idx(FMNIST_DIR / "train-images-idx3-ubyte.gz").reshape(-1, 784)
    y_tr = _idx(FMNIST_DIR / "train-labels-idx1-ubyte.gz")
    x_te = _idx(FMNIST_DIR / "t10k-images-idx3-ubyte.gz").reshape(-1, 784)
    y_te = _idx(FMNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    return "Fashion-MNIST", x_tr / 255.0, y_tr, x_te / 255.0, y_te


def _digits():
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    d = load_digits()
    x, y = d.data / 16.0, d.target
    rng = np.random.RandomState(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:50] for c in range(10)])
    train = np.setdiff1d(np.arange(len(y)), test)
    return "digits", x[train], y[train], x[test], y[test]


def load_long_tailed(smoke: bool = False, imbalance_factor: float = 100.0, seed: int = 0) -> LTData:
    """A long-tailed training split and a balanced test split (float32 features, int64 labels)."""
    if (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        name, x_tr, y_tr, x_te, y_te = _fashion_mnist()
        n_max, many, few = (300, 60, 12) if smoke else (2000, 200, 40)
    else:
        name, x_tr, y_tr, x_te, y_te = _digits()
        n_max, many, few = (120, 40, 8) if smoke else (120, 40, 8)
    y_tr_t = torch.as_tensor(y_tr, dtype=torch.int64)
    keep = long_tailed_indices(y_tr_t, imbalance_factor, profile="exp", seed=seed, max_per_class=n_max)
    if smoke:  # a balanced 100-per-class test subset keeps the smoke run to seconds
        rng = np.random.RandomState(seed)
        sub = np.concatenate([rng.permutation(np.flatnonzero(y_te == c))[:100] for c in range(10)])
        x_te, y_te = x_te[sub], y_te[sub]
    x_train = torch.as_tensor(x_tr, dtype=torch.float32)[keep]
    y_train = y_tr_t[keep]
    return LTData(name, x_train, y_train, torch.as_tensor(x_te, dtype=torch.float32),
                  torch.as_tensor(y_te, dtype=torch.int64), tailwise.data.class_counts(y_train, 10), many, few)


def mlp(in_features: int, num_classes: int = 10, hidden: int = 256) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


@torch.no_grad()
def evaluate(model: nn.Module, data: LTData) -> Dict[str, float]:
    """Overall, balanced (mean per-class) and many/medium/few-shot test accuracy."""
    model.eval()
    logits = model(data.x_test)
    shots = tailwise.metrics.shot_accuracy(logits, data.y_test, data.class_counts, many=data.many, few=data.few)
    return {"acc": shots["overall"], "bal_acc": tailwise.metrics.balanced_accuracy(logits, data.y_test),
            "many": shots["many"], "medium": shots["medium"], "few": shots["few"]}
