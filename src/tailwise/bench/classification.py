"""``tailwise bench classification``: which loss helps the tail of a long-tailed classifier?

Default data: scikit-learn's bundled digits (1797 images of 8x8, 10 classes), no download. A
balanced test split of ``--test-per-class`` images per class is held out first; the rest is made
long-tailed with :func:`tailwise.data.long_tailed_indices` (exponential profile, imbalance
factor 50 by default), so the test set measures every class equally. A small MLP is trained with
each loss over several seeds, and many / medium / few-shot accuracy (classes with more than
100 / 20..100 / fewer than 20 training images) is reported next to overall and balanced accuracy.

``--data PATH`` runs the same comparison on the user's own ``.npz`` (``X``, ``y``) or CSV: a
stratified split, the natural imbalance kept (``--imbalance-factor`` additionally subsamples it).
"""

from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from ._report import mean_std, pyplot, save_figure
from ._vision import IMAGE_DATASETS, SmallResNet, load_image_dataset
from .task import BenchInputError, BenchTask

__all__ = ["TASK", "DEFAULT_LOSSES", "build_classification_loss"]

DEFAULT_LOSSES = ("cross_entropy", "focal", "class_balanced", "balanced_softmax", "logit_adjusted",
                  "bal_bce", "iif", "eqlv2", "equalized_focal")
METRICS = ("many", "medium", "few", "overall", "balanced_acc")
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_EPOCHS = 40
DEFAULT_IF = 50.0
DEFAULT_IF_IMAGES = 100.0  # the CIFAR-LT protocol's usual setting
DEFAULT_EPOCHS_IMAGES = 10  # CPU-sized; the paper protocol trains 200 epochs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classification")
    group.add_argument("--dataset", default="digits", choices=("digits",) + IMAGE_DATASETS,
                       help="built-in data: digits (default, bundled with scikit-learn) or a local image "
                            "dataset made long-tailed (cifar10-lt, cifar100-lt need --data-dir; "
                            "fashion-mnist-lt uses Debian's dataset-fashion-mnist or --data-dir)")
    group.add_argument("--data-dir", default=None,
                       help="folder with a local CIFAR python release or Fashion-MNIST IDX files")
    group.add_argument("--label-column", default="label",
                       help="CSV column holding the class label for --data (default: label)")
    group.add_argument("--test-per-class", type=int, default=50,
                       help="digits: balanced test images per class held out before the long tail (default 50)")
    group.add_argument("--profile", choices=("exp", "step"), default="exp",
                       help="long-tail profile of the training subset (default exp)")
    group.add_argument("--many-threshold", type=int, default=100,
                       help="classes with more training samples than this are many-shot (default 100)")
    group.add_argument("--few-threshold", type=int, default=20,
                       help="classes with fewer training samples than this are few-shot (default 20)")


# ------------------------------------------------------------------ data
def _digits() -> Tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise BenchInputError("the default classification data needs scikit-learn "
                              "(pip install 'tailwise[bench]'), or pass --data PATH") from None
    d = load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int64)


def _split(spec: Dict, args) -> Dict[str, torch.Tensor]:
    """Deterministic train/test split for one run (depends on the data seed, not the loss)."""
    from ..data import long_tailed_indices

    rng = np.random.default_rng(spec["seed"])
    if spec["dataset"] == "digits":
        X, y = _digits()
        test_idx, pool_idx = [], []
        per_class = spec["test_per_class"]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            test_idx.append(idx[:per_class])
            pool_idx.append(idx[per_class:])
        test_idx, pool_idx = np.concatenate(test_idx), np.concatenate(pool_idx)
        imbalance = spec["imbalance_factor"]
    elif spec["dataset"] in IMAGE_DATASETS:
        return _split_images(spec)
    else:
        from ._data import load_user_data

        X, y = load_user_data(spec["dataset"], spec["label_column"])
        test_idx, pool_idx = [], []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            n_test = max(1, int(round(0.25 * len(idx)))) if len(idx) > 1 else 0
            test_idx.append(idx[:n_test])
            pool_idx.append(idx[n_test:])
        test_idx, pool_idx = np.concatenate(test_idx), np.concatenate(pool_idx)
        imbalance = spec["imbalance_factor"]
    num_classes = int(y.max()) + 1
    if imbalance is not None and imbalance > 1:
        sub = long_tailed_indices(torch.as_tensor(y[pool_idx]), imbalance, profile=spec["profile"],
                                  seed=spec["seed"]).numpy()
        train_idx = pool_idx[sub]
    else:
        train_idx = pool_idx
    counts = np.bincount(y[train_idx], minlength=num_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise BenchInputError(f"classes {missing} have no training samples after the split; "
                              "lower --imbalance-factor or provide more data")
    mean = X[train_idx].mean(0)
    std = X[train_idx].std(0) + 1e-6
    as_t = lambda a: torch.as_tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return {"x_train": as_t(X[train_idx]), "y_train": torch.as_tensor(y[train_idx]),
            "x_test": as_t(X[test_idx]), "y_test": torch.as_tensor(y[test_idx]),
            "counts": torch.as_tensor(counts), "num_classes": num_classes}


def _split_images(spec: Dict) -> Dict[str, torch.Tensor]:
    from ..data import long_tailed_indices

    xtr, ytr, xte, yte = load_image_dataset(spec["dataset"], spec["data_dir"])
    num_classes = int(max(ytr.max(), yte.max())) + 1
    sub = long_tailed_indices(torch.as_tensor(ytr), spec["imbalance_factor"], profile=spec["profile"],
                              seed=spec["seed"]).numpy()
    xtr, ytr = xtr[sub], ytr[sub]
    x_train = torch.as_tensor(xtr, dtype=torch.float32) / 255.0
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True) + 1e-6
    x_test = (torch.as_tensor(xte, dtype=torch.float32) / 255.0 - mean) / std
    return {"x_train": (x_train - mean) / std, "y_train": torch.as_tensor(ytr), "x_test": x_test,
            "y_test": torch.as_tensor(yte), "counts": torch.as_tensor(np.bincount(ytr, minlength=num_classes)),
            "num_classes": num_classes}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip + 4-pixel pad-and-crop (the CIFAR-LT recipe's augmentation)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + h, dx:dx + w]


# ------------------------------------------------------------------ losses
def build_classification_loss(name: str, class_counts: torch.Tensor, num_classes: int) -> nn.Module:
    """Build a registered loss, passing ``class_counts`` / ``num_classes`` where it takes them."""
    from ..registry import get_loss_class

    cls = get_loss_class(name)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    if "class_counts" in params:
        kwargs["class_counts"] = class_counts
    if "num_classes" in params:
        kwargs["num_classes"] = num_classes
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise BenchInputError(f"loss {name!r} cannot be built for classification with class_counts/"
                              f"num_classes only ({exc})") from None


def _scores(loss: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Test-time scores: a loss that defines its own inference transform (IIF) uses it."""
    transform = getattr(loss, "inference_logits", None)
    return transform(logits) if callable(transform) else logits


class _MLP(nn.Sequential):
    def __init__(self, d_in: int, num_classes: int, hidden: int = 64):
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def _train_eval(spec: Dict, data: Dict) -> Dict:
    from ..metrics import balanced_accuracy, per_class_recall, shot_accuracy

    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    C = data["num_classes"]
    images = data["x_train"].dim() == 4
    model = SmallResNet(data["x_train"].shape[1], C) if images else _MLP(data["x_train"].shape[1], C)
    loss_fn = build_classification_loss(spec["loss"], data["counts"], C)
    params = list(model.parameters()) + [p for p in loss_fn.parameters() if p.requires_grad]
    if images:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=2e-4)
    else:
        opt = torch.optim.Adam(params, lr=3e-3, weight_decay=1e-4)
    n = data["x_train"].shape[0]
    batch = 128 if images else 64
    steps_per_epoch = max(1, math.ceil(n / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec["epochs"] * steps_per_epoch)
    model.train()
    loss_fn.train()
    for _ in range(spec["epochs"]):
        perm = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            x = data["x_train"][idx]
            if images:
                x = _augment(x, gen)
            loss = loss_fn(model(x), data["y_train"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    loss_fn.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in data["x_test"].split(1000)])
        pred = _scores(loss_fn, logits).argmax(1)
    y, counts = data["y_test"], data["counts"]
    shots = shot_accuracy(pred, y, counts, many=spec["many_threshold"], few=spec["few_threshold"])
    return {"many": shots["many"], "medium": shots["medium"], "few": shots["few"],
            "overall": shots["overall"], "balanced_acc": float(balanced_accuracy(pred, y, num_classes=C)),
            "per_class_acc": [float(v) for v in per_class_recall(pred, y, num_classes=C)],
            "class_counts": [int(v) for v in counts]}


# ------------------------------------------------------------------ task
def plan(args) -> List[Dict]:
    from ..registry import list_losses

    seeds = list(args.seeds) if args.seeds else list(DEFAULT_SEEDS)
    data = getattr(args, "data", None)
    if data is not None:
        from ._data import load_user_data

        load_user_data(data, getattr(args, "label_column", "label"))  # fail fast, before any run
        dataset = str(Path(data).resolve())
        imbalance = args.imbalance_factor
    elif getattr(args, "dataset", "digits") in IMAGE_DATASETS:
        dataset = args.dataset
        load_image_dataset(dataset, getattr(args, "data_dir", None), read=False)  # fail fast with a clear message
        imbalance = args.imbalance_factor if args.imbalance_factor is not None else DEFAULT_IF_IMAGES
    else:
        dataset = "digits"
        imbalance = args.imbalance_factor if args.imbalance_factor is not None else DEFAULT_IF
    if imbalance is not None and imbalance < 1:
        raise BenchInputError(f"--imbalance-factor must be >= 1, got {imbalance}")
    losses = list(args.losses) if args.losses else list(DEFAULT_LOSSES)
    known = set(list_losses())
    unknown = [name for name in losses if name not in known]
    if unknown:
        raise BenchInputError(f"unknown loss {', '.join(unknown)}; `tailwise list` shows the registered names")
    base = {"task": "classification", "dataset": dataset, "imbalance_factor": imbalance,
            "profile": getattr(args, "profile", "exp"),
            "epochs": args.epochs or (DEFAULT_EPOCHS_IMAGES if dataset in IMAGE_DATASETS else DEFAULT_EPOCHS),
            "data_dir": str(Path(args.data_dir).resolve()) if getattr(args, "data_dir", None) else None,
            "test_per_class": getattr(args, "test_per_class", 50),
            "label_column": getattr(args, "label_column", "label"),
            "many_threshold": getattr(args, "many_threshold", 100),
            "few_threshold": getattr(args, "few_threshold", 20)}
    return [{**base, "loss": loss, "seed": seed} for loss in losses for seed in seeds]


_SPLITS: Dict[str, Dict] = {}


def execute(spec: Dict, args) -> Dict:
    # the split depends on the data seed only: compute it once per seed, not once per loss
    key = repr(sorted((k, v) for k, v in spec.items() if k != "loss"))
    if key not in _SPLITS:
        _SPLITS[key] = _split(spec, args)
    if spec["dataset"] in IMAGE_DATASETS:
        return _train_eval(spec, _SPLITS[key])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-unit MLP on 64-row batches: the thread pool only adds overhead
    try:
        return _train_eval(spec, _SPLITS[key])
    finally:
        torch.set_num_threads(threads)


def _fmt(values: List[float]) -> Tuple[float, str]:
    m, sd = mean_std(values)
    if math.isnan(m):
        return m, "n/a"
    return m * 100, f"{m * 100:.1f} ± {sd * 100:.1f}"


def report(records: List[Dict], args, out_dir: Path) -> str:
    if not records:
        return "## Classification\n\nNo finished runs."
    losses = list(dict.fromkeys(r["loss"] for r in records))
    table = {loss: {m: _fmt([r[m] for r in records if r["loss"] == loss]) for m in METRICS} for loss in losses}
    def top(m):
        vals = [round(table[l][m][0], 1) for l in losses if not math.isnan(table[l][m][0])]
        return max(vals) if vals else None

    best = {m: top(m) for m in METRICS}
    first = records[0]
    counts = first["class_counts"]
    n_seeds = len({r["seed"] for r in records})
    if first["dataset"] in IMAGE_DATASETS:
        setup = "the dataset's own balanced test split; small ResNet"
    elif first["dataset"] == "digits":
        setup = f"balanced test split of {first['test_per_class']} images per class; 64-unit MLP"
    else:
        setup = "stratified 25% test split (your data's own class balance); 64-unit MLP"
    if first["imbalance_factor"] is not None and first["imbalance_factor"] > 1:
        train = (f"training set long-tailed (profile {first['profile']}, imbalance factor "
                 f"{first['imbalance_factor']:g})")
    else:
        train = "training set with its natural class balance"
    lines = ["## Classification", "",
             f"Data: {first['dataset']}, {train}, per-class training counts {counts}; {setup} trained "
             f"{first['epochs']} epochs; {n_seeds} seed(s). Accuracy in % "
             f"(mean ± std over seeds; best mean per column in bold, ties included). Many: > "
             f"{first['many_threshold']} training samples, few: < {first['few_threshold']}.", "",
             "| loss | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for loss in losses:
        cells = [f"**{table[loss][m][1]}**" if best[m] is not None and round(table[loss][m][0], 1) == best[m]
                 else table[loss][m][1] for m in METRICS]
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    lines += ["", _recommend(table, losses), ""]
    png = _plot(records, losses, out_dir)
    if png:
        lines.append(f"![per-class accuracy vs training count]({png})")
    return "\n".join(lines)


def _recommend(table, losses) -> str:
    bal = {l: table[l]["balanced_acc"][0] for l in losses}
    winner = max(losses, key=lambda l: bal[l])
    text = (f"**Recommendation:** on this data `{winner}` gives the best balanced accuracy "
            f"({bal[winner]:.1f}%).")
    baseline = "cross_entropy" if "cross_entropy" in losses else None
    if baseline and winner != baseline:
        changes = [f"{group}-shot accuracy by {table[winner][group][0] - table[baseline][group][0]:+.1f} points"
                   for group in ("few", "medium", "many")
                   if not math.isnan(table[winner][group][0] - table[baseline][group][0])]
        d_bal = bal[winner] - bal[baseline]
        text += (f" Against plain cross-entropy it changes {', '.join(changes)} ({d_bal:+.1f} balanced)."
                 if changes else f" It beats plain cross-entropy by {d_bal:+.1f} points of balanced accuracy.")
    elif baseline:
        text += " No tail-aware loss beat plain cross-entropy here; the imbalance may be mild for this model."
    text += (" Differences smaller than the standard deviations are not evidence; add seeds "
             "(--seeds) before switching losses on a small gap.")
    return text


def _plot(records, losses, out_dir: Path):
    plt = pyplot()
    if plt is None:
        return None
    counts = np.asarray(records[0]["class_counts"])
    order = np.argsort(-counts)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for loss in losses:
        acc = np.mean([r["per_class_acc"] for r in records if r["loss"] == loss], axis=0)
        ax.plot(counts[order], acc[order] * 100, marker="o", label=loss)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("class training count (log scale, head -> tail)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title("Per-class accuracy vs training count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, out_dir, "classification_per_class.png")


TASK = BenchTask(name="classification", help="long-tailed digits (or --data) with tail-aware losses",
                 plan=plan, execute=execute, report=report, add_arguments=add_arguments)
