"""Local image datasets for ``tailwise bench classification --dataset ...`` (never downloads).

* ``cifar10-lt`` / ``cifar100-lt``: the python-pickle release of CIFAR
  (``cifar-10-batches-py/`` with ``data_batch_1..5`` and ``test_batch``, or ``cifar-100-python/``
  with ``train`` and ``test``) found under ``--data-dir``. Parsed directly with ``pickle`` so
  torchvision is not required.
* ``fashion-mnist-lt``: the four IDX ``.gz`` files of Fashion-MNIST, from ``--data-dir`` or
  Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``).

The training split is then made long-tailed with the CIFAR-LT recipe; the test split stays
balanced. The model is a small pre-activation ResNet (3 stages, one block each), enough to show
the head/tail gap on CPU in minutes rather than the hours of the paper's ResNet-32.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from .task import BenchInputError

__all__ = ["IMAGE_DATASETS", "load_image_dataset", "SmallResNet"]

IMAGE_DATASETS = ("cifar10-lt", "cifar100-lt", "fashion-mnist-lt")
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _unpickle(path: Path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _load_cifar(root: Path, which: str, read: bool = True):
    if which == "cifar10-lt":
        folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [folder / "test_batch"]
        key = "labels"
        hint = "cifar-10-batches-py/ (data_batch_1..5, test_batch)"
    else:
        folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
        train_files, test_files, key = [folder / "train"], [folder / "test"], "fine_labels"
        hint = "cifar-100-python/ (train, test)"
    missing = [p.name for p in train_files + test_files if not p.is_file()]
    if missing:
        raise BenchInputError(f"{which}: no local CIFAR copy under {root} (missing {', '.join(missing)}); "
                              f"expected the python release {hint}. tailwise never downloads data.")
    if not read:
        return None

    def read(files):
        xs, ys = [], []
        for p in files:
            d = _unpickle(p)
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    return (*read(train_files), *read(test_files))


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        # a copy: frombuffer is read-only, which torch.as_tensor warns about
        return np.frombuffer(f.read(), np.uint8, offset=offset).copy()


def _load_fashion(root: Optional[Path], read: bool = True):
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    candidates = [root] if root is not None else [FASHION_MNIST_DEBIAN]
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            if not read:
                return None
            xtr = _read_idx(folder / names[0], 16).reshape(-1, 1, 28, 28)
            ytr = _read_idx(folder / names[1], 8).astype(np.int64)
            xte = _read_idx(folder / names[2], 16).reshape(-1, 1, 28, 28)
            yte = _read_idx(folder / names[3], 8).astype(np.int64)
            return xtr, ytr, xte, yte
    raise BenchInputError(f"fashion-mnist-lt: the IDX files ({', '.join(names)}) are not under "
                          f"{candidates[0]}; install Debian's dataset-fashion-mnist package or pass "
                          "--data-dir. tailwise never downloads data.")


def load_image_dataset(name: str, data_dir: Optional[str], read: bool = True) -> Optional[Tuple[np.ndarray, ...]]:
    """``(x_train uint8 (N,C,H,W), y_train, x_test, y_test)`` of a local image dataset.

    With ``read=False`` only checks that the files are there (raising the same clear errors).
    """
    if name not in IMAGE_DATASETS:
        raise BenchInputError(f"--dataset must be one of digits, {', '.join(IMAGE_DATASETS)}; got {name!r}")
    if name.startswith("cifar"):
        if data_dir is None:
            raise BenchInputError(f"{name} needs --data-dir pointing at a local CIFAR python release; "
                                  "tailwise never downloads data")
        root = Path(data_dir)
        if not root.is_dir():
            raise BenchInputError(f"--data-dir {data_dir} is not a directory")
        return _load_cifar(root, name, read)
    return _load_fashion(Path(data_dir) if data_dir else None, read)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.short = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                      if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        short = self.short(out) if not isinstance(self.short, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + short


class SmallResNet(nn.Module):
    """Pre-activation ResNet with widths 16/32/64, one block per stage, global pooling."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.stages = nn.Sequential(_Block(width, width, 1), _Block(width, 2 * width, 2),
                                    _Block(2 * width, 4 * width, 2))
        self.bn = nn.BatchNorm2d(4 * width)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.stages(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))
