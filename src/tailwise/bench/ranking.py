"""``tailwise bench ranking``: rare-positive ranking on digits-as-binary (about 1% positives).

Data: scikit-learn's bundled ``load_digits`` (1797 8x8 images, imported lazily; needs the
``bench`` extra). One digit (``--positive-digit``, default 0) is the positive class and its
images are subsampled so that positives are 1% of the data (16 of 1635 rows); the rest are
negatives. Each seed draws its own positive subsample and a stratified 50/50 train/test split.
Features are standardised with the training statistics.

Model and training: a linear scorer (64 -> 1), full-batch Adam (lr 0.01) for ``--epochs`` steps
(default 300). Losses: ``bce``; ``sigmoid_focal`` (tailwise.SigmoidFocalLoss, alpha 0.25, gamma 2,
when installed); ``smooth_ap`` (tau 0.01 on the logits); ``pauc_at_budget`` (FPR band [0, 0.05],
sigmoid surrogate, tau 0.1). With about 8 training positives the ranking losses see every
positive in every step, so no queue is used here.

Metrics on the test split: average precision (exact, no ties in practice) and recall in the top
1% of test scores (k = ceil(0.01 * n_test)). The report is a markdown table of mean +- std over
seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List

import torch

from ._report import mean_std, pyplot, save_figure
from .task import BenchInputError, BenchTask

__all__ = ["TASK", "ALL_LOSSES", "DEFAULT_LOSSES"]

ALL_LOSSES = ("bce", "sigmoid_focal", "smooth_ap", "pauc_at_budget", "recall_at_quantile")
DEFAULT_LOSSES = ("bce", "sigmoid_focal", "smooth_ap", "pauc_at_budget")
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_EPOCHS = 300
POS_RATE = 0.01
LR = 0.01


def add_arguments(parser) -> None:
    group = parser.add_argument_group("ranking")
    group.add_argument("--positive-digit", type=int, default=0,
                       help="ranking: the digit that is the rare positive class (default 0)")


def _digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BenchInputError("the ranking task needs scikit-learn (pip install 'tailwise[bench]')") from exc
    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target)


def _data(spec: Dict):
    x, digit = _digits()
    gen = torch.Generator().manual_seed(int(spec["seed"]))
    pos_idx = torch.nonzero(digit == spec["positive_digit"]).squeeze(1)
    neg_idx = torch.nonzero(digit != spec["positive_digit"]).squeeze(1)
    n_pos = max(2, round(POS_RATE / (1 - POS_RATE) * neg_idx.numel()))
    pos_idx = pos_idx[torch.randperm(pos_idx.numel(), generator=gen)[:n_pos]]
    split = {}
    for name, idx in (("pos", pos_idx), ("neg", neg_idx)):
        perm = idx[torch.randperm(idx.numel(), generator=gen)]
        half = perm.numel() // 2
        split[name] = (perm[:half], perm[half:])
    tr = torch.cat([split["pos"][0], split["neg"][0]])
    te = torch.cat([split["pos"][1], split["neg"][1]])
    y = (digit == spec["positive_digit"]).float()
    mean, std = x[tr].mean(0), x[tr].std(0).clamp_min(1e-3)
    return (x[tr] - mean) / std, y[tr], (x[te] - mean) / std, y[te], gen


def _criterion(name: str):
    import tailwise
    from .. import functional as TF

    if name == "bce":
        return torch.nn.functional.binary_cross_entropy_with_logits
    if name == "sigmoid_focal":
        if not hasattr(tailwise, "SigmoidFocalLoss"):
            raise BenchInputError("sigmoid_focal needs tailwise.SigmoidFocalLoss, which this install lacks")
        return tailwise.SigmoidFocalLoss()
    if name == "smooth_ap":
        return lambda s, y: TF.smooth_ap_loss(s, y, temperature=0.01)
    if name == "pauc_at_budget":
        return lambda s, y: TF.pauc_at_budget_loss(s, y, alpha=0.0, beta=0.05, temperature=0.1)
    if name == "recall_at_quantile":
        return lambda s, y: TF.recall_at_quantile_loss(s, y, quantile=0.99, temperature=0.1)
    raise BenchInputError(f"unknown ranking loss {name!r}; choose from {', '.join(ALL_LOSSES)}")


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    order = torch.argsort(scores, descending=True, stable=True)
    hits = labels[order].double()
    prec = hits.cumsum(0) / torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    return float((prec * hits).sum() / hits.sum().clamp_min(1))


def recall_at_top(scores: torch.Tensor, labels: torch.Tensor, frac: float = 0.01) -> float:
    k = max(1, math.ceil(frac * scores.numel()))
    top = torch.argsort(scores, descending=True, stable=True)[:k]
    return float(labels[top].sum() / labels.sum().clamp_min(1))


def execute(spec: Dict, args) -> Dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xtr, ytr, xte, yte, gen = _data(spec)
        loss_fn = _criterion(spec["loss"])
        w = (torch.randn(xtr.shape[1], generator=gen) * 0.01).requires_grad_(True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=LR)
        for _ in range(int(spec["epochs"])):
            opt.zero_grad()
            loss = loss_fn(xtr @ w + b, ytr)
            loss.backward()
            opt.step()
        with torch.no_grad():
            s = xte @ w + b
        return {"ap": average_precision(s, yte), "recall_at_1pct": recall_at_top(s, yte),
                "n_test_pos": int(yte.sum()), "n_test": int(yte.numel()), "train_loss": float(loss.detach())}
    finally:
        torch.set_num_threads(threads)


def plan(args) -> List[Dict]:
    losses = list(args.losses) if getattr(args, "losses", None) else list(DEFAULT_LOSSES)
    unknown = [n for n in losses if n not in ALL_LOSSES]
    if unknown:
        raise BenchInputError(f"unknown ranking loss {unknown[0]!r}; choose from {', '.join(ALL_LOSSES)}")
    digit = int(getattr(args, "positive_digit", 0) if getattr(args, "positive_digit", None) is not None else 0)
    if not 0 <= digit <= 9:
        raise BenchInputError(f"--positive-digit must be 0..9, got {digit}")
    seeds = list(args.seeds) if getattr(args, "seeds", None) else list(DEFAULT_SEEDS)
    epochs = int(args.epochs) if getattr(args, "epochs", None) else DEFAULT_EPOCHS
    return [{"task": "ranking", "loss": loss, "seed": int(seed), "dataset": "digits", "positive_digit": digit,
             "pos_rate": POS_RATE, "epochs": epochs} for loss in losses for seed in seeds]


def report(records: List[Dict], args, out_dir: Path) -> str:
    lines = ["## ranking: digits-as-binary with 1% positives", ""]
    if not records:
        return "\n".join(lines + ["No finished runs."])
    losses = [n for n in ALL_LOSSES if any(r["loss"] == n for r in records)]
    nseeds = len({r["seed"] for r in records})
    npos = sorted({r["n_test_pos"] for r in records})
    lines += [f"Linear scorer on standardised 8x8 digits, digit {records[0]['positive_digit']} positive "
              f"(1% of rows), {'/'.join(str(e) for e in sorted({r['epochs'] for r in records}))} full-batch "
              f"Adam steps; test split with {'/'.join(map(str, npos))} positives. Mean ± std over {nseeds} "
              "seed(s); higher is better, best mean in bold.", ""]
    stats = {n: {k: mean_std([r[k] for r in records if r["loss"] == n]) for k in ("ap", "recall_at_1pct")}
             for n in losses}
    best = {k: max(stats[n][k][0] for n in losses) for k in ("ap", "recall_at_1pct")}
    lines += ["| loss | AP | recall@top-1% |", "|---|---|---|"]
    for n in losses:
        cells = []
        for k in ("ap", "recall_at_1pct"):
            m, s = stats[n][k]
            txt = f"{m:.3f} ± {s:.3f}"
            cells.append(f"**{txt}**" if m == best[k] else txt)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(losses, [stats[n]["ap"][0] for n in losses], yerr=[stats[n]["ap"][1] for n in losses])
        ax.set_ylabel("test AP")
        ax.set_title("digits, 1% positives")
        lines += ["", f"![test AP]({save_figure(fig, out_dir, 'ranking_ap.png', dpi=100)})"]
    return "\n".join(lines)


TASK = BenchTask(name="ranking", help="AP and recall@top-1% on digits-as-binary with 1% positives "
                                      "(BCE, focal, Smooth-AP, pAUC); not in the default run budget",
                 plan=plan, execute=execute, report=report, add_arguments=add_arguments)
