"""``tailwise bench classification``: which loss, sampler or post-hoc adjustment helps the tail?

Default data: scikit-learn's bundled digits (1797 images of 8x8, 10 classes), no download. A
balanced test split of ``--test-per-class`` images per class is held out first; the rest is made
long-tailed with :func:`tailwise.data.long_tailed_indices` (exponential profile, imbalance
factor 50 by default), so the test set measures every class equally. A small MLP is trained with
each configuration over several seeds, and many / medium / few-shot accuracy (classes with more
than 100 / 20..100 / fewer than 20 training images) is reported next to overall, balanced and
natural-distribution accuracy (per-class accuracy weighted by the training class frequencies).

The grid (see :mod:`tailwise.bench._grid`): every ``--losses`` entry (``name`` or
``name:key=value``) with plain shuffling; each ``--samplers`` entry other than ``none`` with
cross-entropy (Kang et al.'s re-sampling setting); ``--post-hoc adjust``: a cross-entropy model
trained on 80% of the training set whose test logits go through :func:`tailwise.adjust_logits`
with ``tau`` tuned on the held-out 20% (balanced accuracy over ``tau`` in 0, 0.25, ..., 3).

``--data PATH`` runs the same comparison on the user's own ``.npz`` (``X``, ``y``) or CSV: a
stratified split, the natural imbalance kept (``--imbalance-factor`` additionally subsamples it).
``--dataset fashion-mnist-lt`` (and the CIFAR-LT sets from a local copy) trains a small ResNet;
on CUDA (``--device``, automatic) under bf16 mixed precision. ``--preset gpu-worked-example`` is
the documented GPU comparison of docs/bench.md.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from ._device import resolve_device
from ._grid import (POST_HOC, SAMPLERS, build_classification_loss, config_label, identical_groups, loss_label,
                    parse_loss)
from ._vision import IMAGE_DATASETS, SmallResNet, load_image_dataset
from .task import BenchInputError, BenchTask

__all__ = ["TASK", "DEFAULT_LOSSES", "PRESETS", "build_classification_loss"]

# logit_adjusted at its library default tau=1 is balanced_softmax exactly (the bench would merge
# the two rows); the default grid compares tau=2, a distinct, stronger adjustment
DEFAULT_LOSSES = ("cross_entropy", "focal", "class_balanced", "balanced_softmax", "logit_adjusted:tau=2",
                  "bal_bce", "iif", "eqlv2", "equalized_focal")
METRICS = ("many", "medium", "few", "overall", "balanced_acc", "natural_acc")
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_EPOCHS = 40
DEFAULT_IF = 50.0
DEFAULT_IF_IMAGES = 100.0  # the CIFAR-LT protocol's usual setting
DEFAULT_EPOCHS_IMAGES = 10  # CPU-sized; the paper protocol trains 200 epochs
HOLDOUT_FRACTION = 0.2
TAU_GRID = tuple(i / 4 for i in range(13))  # 0, 0.25, ..., 3

# A preset fills every option the user did not set (explicit flags win).
PRESETS: Dict[str, Dict[str, object]] = {
    "gpu-worked-example": {
        "dataset": "fashion-mnist-lt", "imbalance_factor": 100.0, "seeds": [0, 1, 2, 3, 4], "epochs": 30,
        "losses": ["cross_entropy", "balanced_softmax", "logit_adjusted:tau=2", "focal"],
        "samplers": "none,class_balanced", "post_hoc": "adjust",
        # counts run 6000 ... 60 at IF 100: 4 many (> 1000), 3 medium, 3 few (< 200) classes
        "many_threshold": 1000, "few_threshold": 200,
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classification")
    group.add_argument("--dataset", default=None, choices=("digits",) + IMAGE_DATASETS,
                       help="built-in data: digits (default, bundled with scikit-learn) or a local image "
                            "dataset made long-tailed (cifar10-lt, cifar100-lt need --data-dir; "
                            "fashion-mnist-lt uses Debian's dataset-fashion-mnist or --data-dir)")
    group.add_argument("--data-dir", default=None,
                       help="folder with a local CIFAR python release or the four Fashion-MNIST IDX .gz files")
    group.add_argument("--label-column", default="label",
                       help="CSV column holding the class label for --data (default: label)")
    group.add_argument("--test-per-class", type=int, default=50,
                       help="digits: balanced test images per class held out before the long tail (default 50)")
    group.add_argument("--profile", choices=("exp", "step"), default="exp",
                       help="long-tail profile of the training subset (default exp)")
    group.add_argument("--many-threshold", type=int, default=None,
                       help="classes with more training samples than this are many-shot (default 100)")
    group.add_argument("--few-threshold", type=int, default=None,
                       help="classes with fewer training samples than this are few-shot (default 20)")
    group.add_argument("--samplers", default=None,
                       help="comma list of training samplers, each run with cross_entropy: "
                            f"{', '.join(SAMPLERS)} (none = plain shuffling, what every loss uses)")
    group.add_argument("--post-hoc", dest="post_hoc", default=None, choices=POST_HOC,
                       help="adjust: also run cross_entropy + post-hoc logit adjustment (adjust_logits at "
                            "test time, tau tuned on a held-out 20%% of the training set)")
    group.add_argument("--preset", default=None, choices=tuple(PRESETS),
                       help="a documented configuration (explicit flags override it); gpu-worked-example: "
                            "Fashion-MNIST-LT IF 100, 5 seeds x {CE, Balanced Softmax, LA tau=2, focal, "
                            "CE + class-balanced sampler, CE + post-hoc adjustment}, 30 epochs")


def apply_preset(args) -> None:
    """Fill the options ``args`` leaves unset from ``--preset`` (no-op without one)."""
    name = getattr(args, "preset", None)
    if not name:
        return
    for key, value in PRESETS[name].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)

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
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)  # CPU generator: same draws on every device
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + h, dx:dx + w]


# ------------------------------------------------------------------ training
def _scores(loss: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Test-time scores: a loss that defines its own inference transform (IIF) uses it."""
    transform = getattr(loss, "inference_logits", None)
    return transform(logits) if callable(transform) else logits


class _MLP(nn.Sequential):
    def __init__(self, d_in: int, num_classes: int, hidden: int = 64):
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def _make_sampler(name: str, labels: torch.Tensor, epochs: int, seed: int):
    """A tailwise.data sampler built for one process (explicit num_replicas=1, rank=0)."""
    from ..data import ClassBalancedSampler, ProgressivelyBalancedSampler, SquareRootSampler

    common = {"num_samples": labels.numel(), "num_replicas": 1, "rank": 0, "seed": seed}
    if name == "class_balanced":
        return ClassBalancedSampler(labels, **common)
    if name == "sqrt":
        return SquareRootSampler(labels, **common)
    if name == "progressive":
        return ProgressivelyBalancedSampler(labels, epochs, **common)
    raise BenchInputError(f"unknown sampler {name!r}; --samplers takes {', '.join(SAMPLERS)}")


def _holdout(y: torch.Tensor, seed: int, fraction: float = HOLDOUT_FRACTION) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train, held-out) index split of the training set; a class with one sample keeps it."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    keep, held = [], []
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        k = int(round(fraction * idx.numel())) if idx.numel() > 1 else 0
        k = max(1, k) if idx.numel() > 1 else 0
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def _to_device(data: Dict, device: str) -> Dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) and k.startswith("x_") else v) for k, v in data.items()}


def _predict(model: nn.Module, x: torch.Tensor, device: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        return torch.cat([model(chunk).float() for chunk in x.split(1000)]).cpu()


def _balanced(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    from ..metrics import balanced_accuracy

    return float(balanced_accuracy(pred, y, num_classes=num_classes))


def _tune_tau(logits: torch.Tensor, y: torch.Tensor, counts: torch.Tensor) -> Tuple[float, float]:
    """The tau of TAU_GRID with the best held-out balanced accuracy (ties: the one nearest 1, the
    Bayes-optimal value for balanced error); returns (tau, that accuracy)."""
    from .. import adjust_logits

    C = logits.shape[1]
    scored = [(_balanced(adjust_logits(logits, counts, tau=t).argmax(1), y, C), -abs(t - 1.0), t) for t in TAU_GRID]
    acc, _, tau = max(scored)
    return tau, acc


def _train(spec: Dict, x: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, C: int, device: str, args):
    """Train one model; returns (model, loss module)."""
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    images = x.dim() == 4
    model = (SmallResNet(x.shape[1], C) if images else _MLP(x.shape[1], C)).to(device)
    loss_fn = build_classification_loss(spec["loss"], counts, C, spec.get("loss_args")).to(device)
    params = list(model.parameters()) + [p for p in loss_fn.parameters() if p.requires_grad]
    if images:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=2e-4)
    else:
        opt = torch.optim.Adam(params, lr=3e-3, weight_decay=1e-4)
    n = x.shape[0]
    batch = 128 if images else 64
    steps_per_epoch = max(1, math.ceil(n / batch))
    epochs = spec["epochs"]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    sampler = None if spec.get("sampler", "none") == "none" else _make_sampler(spec["sampler"], y, epochs, spec["seed"])
    y_dev = y.to(device)
    amp = device == "cuda"
    model.train()
    loss_fn.train()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if sampler is None:
            order = torch.randperm(n, generator=gen)
        else:
            sampler.set_epoch(epoch)
            order = torch.as_tensor(list(iter(sampler)), dtype=torch.long)
        order = order.to(device)
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            xb = x[idx]
            if images:
                xb = _augment(xb, gen)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(xb), y_dev[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        # the first epoch carries one-off costs (CUDA context, cuDNN autotuning, allocator
        # growth): extrapolate from the second one, as measured on an H100 where the first-epoch
        # estimate was 15x too long
        if epoch <= 1:
            if device == "cuda":
                torch.cuda.synchronize()
            took = time.perf_counter() - t0
            if epoch == 0:
                first_epoch = took
            estimate = getattr(args, "bench_estimate", None)
            if callable(estimate) and (epoch == 1 or epochs == 1):
                total = first_epoch + took * (epochs - 1) if epochs > 1 else first_epoch
                estimate("classification", total, f"timed from the first two epochs on {device}")
    return model, loss_fn


def _train_eval(spec: Dict, data: Dict, device: str, args) -> Dict:
    from .. import adjust_logits
    from ..metrics import per_class_recall, shot_accuracy

    C = data["num_classes"]
    x, y, counts = data["x_train"], data["y_train"], data["counts"]
    extra: Dict[str, object] = {}
    if spec.get("post_hoc", "none") == "adjust":
        keep, held = _holdout(y, spec["seed"])
        counts = torch.bincount(y[keep], minlength=C)
        model, loss_fn = _train(spec, x[keep.to(x.device)], y[keep], counts, C, device, args)
        held_logits = _predict(model, x[held.to(x.device)], device)
        tau, held_acc = _tune_tau(held_logits, y[held], counts)
        extra = {"tau": tau, "holdout_size": int(held.numel()), "holdout_balanced_acc": held_acc}
        pred = adjust_logits(_predict(model, data["x_test"], device), counts, tau=tau).argmax(1)
    else:
        model, loss_fn = _train(spec, x, y, counts, C, device, args)
        loss_fn.eval()
        with torch.no_grad():
            logits = _predict(model, data["x_test"], device)
            pred = _scores(loss_fn.cpu(), logits).argmax(1)
    y_test = data["y_test"]
    # shot groups from the full training counts, so every row's groups hold the same classes
    shots = shot_accuracy(pred, y_test, data["counts"], many=spec["many_threshold"], few=spec["few_threshold"])
    per_class = per_class_recall(pred, y_test, num_classes=C)
    # accuracy the model would have on test data drawn like the training set (natural distribution)
    present = ~torch.isnan(per_class)
    w = counts.to(torch.float64) * present
    natural = float((per_class.nan_to_num(0.0) * w).sum() / w.sum()) if float(w.sum()) > 0 else math.nan
    out = {"many": shots["many"], "medium": shots["medium"], "few": shots["few"], "overall": shots["overall"],
           "balanced_acc": _balanced(pred, y_test, C), "natural_acc": natural,
           "per_class_acc": [float(v) for v in per_class],
           "class_counts": [int(v) for v in data["counts"]],
           "train_counts_used": [int(v) for v in counts],
           "test_counts": [int(v) for v in torch.bincount(y_test, minlength=C)],
           "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "mixed_precision": "bf16 autocast" if device == "cuda" else None}
    out.update(extra)
    return out


# ------------------------------------------------------------------ task
def _default_thresholds(args) -> Tuple[int, int]:
    many = getattr(args, "many_threshold", None)
    few = getattr(args, "few_threshold", None)
    return (100 if many is None else int(many)), (20 if few is None else int(few))


def _samplers(args) -> List[str]:
    text = getattr(args, "samplers", None) or "none"
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    bad = [s for s in names if s not in SAMPLERS]
    if bad or not names:
        raise BenchInputError(f"--samplers takes a comma list of {', '.join(SAMPLERS)}, got {text!r}")
    return list(dict.fromkeys(names))


def plan(args) -> List[Dict]:
    apply_preset(args)
    seeds = list(args.seeds) if getattr(args, "seeds", None) else list(DEFAULT_SEEDS)
    data = getattr(args, "data", None)
    dataset_arg = getattr(args, "dataset", None) or "digits"
    if data is not None:
        from ._data import load_user_data

        load_user_data(data, getattr(args, "label_column", "label"))  # fail fast, before any run
        dataset = str(Path(data).resolve())
        imbalance = args.imbalance_factor
    elif dataset_arg in IMAGE_DATASETS:
        dataset = dataset_arg
        load_image_dataset(dataset, getattr(args, "data_dir", None), read=False)  # fail fast with a clear message
        imbalance = args.imbalance_factor if args.imbalance_factor is not None else DEFAULT_IF_IMAGES
    else:
        dataset = "digits"
        imbalance = args.imbalance_factor if args.imbalance_factor is not None else DEFAULT_IF
    if imbalance is not None and imbalance < 1:
        raise BenchInputError(f"--imbalance-factor must be >= 1, got {imbalance}")
    many, few = _default_thresholds(args)
    if few > many:
        raise BenchInputError(f"--few-threshold ({few}) must not exceed --many-threshold ({many})")
    items = list(args.losses) if getattr(args, "losses", None) else list(DEFAULT_LOSSES)
    parsed = list(dict.fromkeys((name, tuple(sorted(kw.items()))) for name, kw in map(parse_loss, items)))
    losses = [(name, dict(kw)) for name, kw in parsed]
    groups = identical_groups(losses)  # also rejects unknown and non-classification losses
    aliases: Dict[str, List[str]] = {}
    configs = []
    for g in groups:
        name, kw = losses[g[0]]
        label = loss_label(name, kw)
        aliases[label] = [loss_label(*losses[i]) for i in g[1:]]
        configs.append((name, kw, "none", "none", label))
    for sampler in _samplers(args):
        if sampler != "none":
            configs.append(("cross_entropy", {}, sampler, "none", config_label("cross_entropy", sampler)))
    if (getattr(args, "post_hoc", None) or "none") == "adjust":
        configs.append(("cross_entropy", {}, "none", "adjust", config_label("cross_entropy", post_hoc="adjust")))
    args.classification_aliases = aliases
    device = resolve_device(args)
    base = {"task": "classification", "dataset": dataset, "imbalance_factor": imbalance,
            "profile": getattr(args, "profile", "exp"),
            "epochs": args.epochs or (DEFAULT_EPOCHS_IMAGES if dataset in IMAGE_DATASETS else DEFAULT_EPOCHS),
            "data_dir": str(Path(args.data_dir).resolve()) if getattr(args, "data_dir", None) else None,
            "test_per_class": getattr(args, "test_per_class", 50),
            "label_column": getattr(args, "label_column", "label"),
            "many_threshold": many, "few_threshold": few, "device": device}
    # seed-major: every configuration of a seed shares its split (computed once), and an interrupted
    # run leaves complete seeds rather than complete configurations
    return [{**base, "loss": name, "loss_args": kw, "sampler": sampler, "post_hoc": post_hoc, "label": label,
             "seed": seed}
            for seed in seeds for name, kw, sampler, post_hoc, label in configs]


_SPLITS: Dict[str, Dict] = {}
_SPLIT_KEYS = ("dataset", "imbalance_factor", "profile", "data_dir", "test_per_class", "label_column", "seed")


def execute(spec: Dict, args) -> Dict:
    # the split depends on the data seed only: compute it once per seed, not once per configuration
    device = spec.get("device", "cpu")
    key = repr([(k, spec.get(k)) for k in _SPLIT_KEYS] + [("device", device)])
    if key not in _SPLITS:
        if len(_SPLITS) >= 2:  # image splits are large: keep the last two
            _SPLITS.pop(next(iter(_SPLITS)))
        _SPLITS[key] = _to_device(_split(spec, args), device)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    if spec["dataset"] in IMAGE_DATASETS or device != "cpu":
        return _train_eval(spec, _SPLITS[key], device, args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-unit MLP on 64-row batches: the thread pool only adds overhead
    try:
        return _train_eval(spec, _SPLITS[key], device, args)
    finally:
        torch.set_num_threads(threads)


def report(records: List[Dict], args, out_dir: Path) -> str:
    from ._advice import classification_report

    return classification_report(records, args, out_dir)


TASK = BenchTask(name="classification",
                 help="long-tailed digits, Fashion-MNIST-LT or --data: losses, samplers, post-hoc adjustment",
                 plan=plan, execute=execute, report=report, add_arguments=add_arguments)
