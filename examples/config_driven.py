"""Config-driven training: a YAML file (or a Hydra ``DictConfig`` / plain dict) names the loss and
the sampler, ``tailwise.build_loss`` builds them.

    python examples/config_driven.py                                   # examples/configs/long_tail.yaml
    python examples/config_driven.py --set loss.name=focal --set loss.gamma=2.0 --set loss.class_counts=null --set loss.tau=null
    python examples/config_driven.py --set sampler.name=square_root --smoke

``--set a.b=value`` overrides a key the way Hydra's command line does (values parsed as YAML).
With Hydra, pass ``OmegaConf.to_container(cfg.loss)`` to :func:`build_from_config`. PyYAML reads
the file; without it the script uses the same configuration as a built-in dict.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import os
import sys
from typing import Any, Dict

import torch
from torch.utils.data import DataLoader, TensorDataset

import tailwise
from tailwise import data as twdata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import evaluate, load_long_tailed, mlp  # noqa: E402

DEFAULT = {
    "data": {"imbalance_factor": 100, "seed": 0},
    "loss": {"name": "logit_adjusted", "class_counts": "auto", "tau": 1.0},
    "sampler": {"name": "none", "args": {}},
    "train": {"epochs": 10, "batch_size": 128, "lr": 0.001},
}
SAMPLERS = {"class_balanced": twdata.ClassBalancedSampler, "square_root": twdata.SquareRootSampler,
            "progressive": twdata.ProgressivelyBalancedSampler, "minority_weighted": twdata.MinorityWeightedSampler}


def load_config(path: str) -> Dict[str, Any]:
    try:
        import yaml
    except ImportError:
        print("PyYAML is not installed: using the built-in default configuration")
        return copy.deepcopy(DEFAULT)
    with open(path) as f:
        return yaml.safe_load(f)


def apply_override(cfg: Dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep:
        raise SystemExit(f"--set expects key.path=value, got {item!r}")
    try:
        import yaml

        value = yaml.safe_load(raw)
    except ImportError:
        value = raw
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def build_from_config(loss_cfg: Dict[str, Any], class_counts: torch.Tensor) -> torch.nn.Module:
    """``{"name": ..., **kwargs}`` -> the registered loss module; ``"auto"`` values come from the data."""
    kwargs = dict(loss_cfg)
    name = kwargs.pop("name")
    auto = {"class_counts": class_counts.tolist(), "num_classes": len(class_counts)}
    params = inspect.signature(tailwise.get_loss_class(name)).parameters
    for key, value in list(kwargs.items()):
        if value == "auto":
            if key not in auto:
                raise SystemExit(f"loss.{key}: 'auto' is only supported for {sorted(auto)}")
            kwargs[key] = auto[key]
    # losses that need class statistics get them even when the config does not say so
    for key in ("class_counts", "num_classes"):
        p = params.get(key)
        if p is not None and p.default is inspect.Parameter.empty and key not in kwargs:
            kwargs[key] = auto[key]
    return tailwise.build_loss(name, **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="config -> tailwise.build_loss -> training")
    parser.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                                                         "long_tail.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch (seconds)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    for item in args.set:
        apply_override(cfg, item)
    if args.smoke:
        cfg["train"]["epochs"] = 1
    torch.set_num_threads(min(4, torch.get_num_threads()))
    data = load_long_tailed(smoke=args.smoke, imbalance_factor=cfg["data"]["imbalance_factor"],
                            seed=cfg["data"]["seed"])
    criterion = build_from_config(cfg["loss"], data.class_counts)
    print(f"loss: {criterion!r}")
    torch.manual_seed(cfg["data"]["seed"])
    model = mlp(data.x_train.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["train"]["lr"])
    dataset = TensorDataset(data.x_train, data.y_train)
    sampler_name = cfg["sampler"]["name"]
    sampler = None
    if sampler_name not in (None, "none"):
        if sampler_name not in SAMPLERS:
            raise SystemExit(f"sampler.name must be one of none, {', '.join(SAMPLERS)}; got {sampler_name!r}")
        sampler_args = dict(cfg["sampler"].get("args") or {})
        if sampler_name == "progressive":
            sampler_args.setdefault("num_epochs", cfg["train"]["epochs"])
        sampler = SAMPLERS[sampler_name](data.y_train, seed=cfg["data"]["seed"], **sampler_args)
    loader = DataLoader(dataset, batch_size=cfg["train"]["batch_size"], sampler=sampler, shuffle=sampler is None)
    for epoch in range(cfg["train"]["epochs"]):
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            criterion(model(x), y).backward()
            opt.step()
    r = evaluate(model, data)
    print(f"{data.name}-LT, sampler {sampler_name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
