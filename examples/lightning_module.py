"""PyTorch Lightning with tailwise: a loss with running statistics (EQLv2), a class-aware
sampler and torchmetrics-based long-tail metrics, checkpointed and restored.

    python examples/lightning_module.py --smoke                 # seconds, one CPU process (CI)
    python examples/lightning_module.py --devices 2             # DDP: 2 GPUs, or 2 CPU processes
    python examples/lightning_module.py --accelerator gpu --devices 2 --epochs 10

What it shows (and checks, exiting non-zero on failure):

* ``tailwise.EQLv2Loss`` keeps per-class gradient statistics as buffers, so they are saved in the
  Lightning checkpoint and restored by ``load_from_checkpoint``; under DDP they are all-reduced
  inside the loss, so every rank holds the same statistics.
* The sampler (``ProgressivelyBalancedSampler``) is returned unsharded; Lightning wraps it in its
  ``DistributedSamplerWrapper``, so each rank gets its share of one full epoch. The module counts
  the samples every rank sees and checks that the ranks together see a whole epoch.
* ``BalancedAccuracy`` is logged as a metric object (``self.log``), ``ShotAccuracy`` as a dict of
  scalars (``self.log_dict(metric.compute())``); both sync over ranks through torchmetrics.

Needs ``lightning`` (``pip install lightning``, part of ``tailwise[dev]``); without it the script
says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

import torch
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning as L
except ImportError:  # pragma: no cover - depends on the environment
    L = None

import tailwise
from tailwise.data import ProgressivelyBalancedSampler
from tailwise.metrics import BalancedAccuracy, ShotAccuracy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_long_tailed, mlp  # noqa: E402

if L is not None:

    class LitLongTail(L.LightningModule):
        def __init__(self, class_counts, many: int, few: int, in_features: int, lr: float = 1e-3,
                     balance_epochs: int = 10, batch_size: int = 64, seed: int = 0):
            super().__init__()
            self.save_hyperparameters()
            self.model = mlp(in_features)
            self.criterion = tailwise.EQLv2Loss(num_classes=len(class_counts))
            self.val_bacc = BalancedAccuracy(len(class_counts))
            self.val_shot = ShotAccuracy(class_counts, many=many, few=few)
            self.data = None  # attached by the script, not saved in hparams
            self.seen = torch.zeros((), dtype=torch.int64)

        def forward(self, x):
            return self.model(x)

        def train_dataloader(self):
            # unsharded: Lightning's DistributedSamplerWrapper shards it under DDP
            self.sampler = ProgressivelyBalancedSampler(self.data.y_train, num_epochs=self.hparams.balance_epochs,
                                                        seed=self.hparams.seed)
            return DataLoader(TensorDataset(self.data.x_train, self.data.y_train), batch_size=self.hparams.batch_size,
                              sampler=self.sampler)

        def val_dataloader(self):
            return DataLoader(TensorDataset(self.data.x_test, self.data.y_test), batch_size=256)

        def on_train_epoch_start(self):
            self.sampler.set_epoch(self.current_epoch)  # Lightning only sets its wrapper's epoch
            self.seen = torch.zeros((), dtype=torch.int64, device=self.device)

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.seen += y.numel()
            loss = self.criterion(self(x), y)
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def on_train_epoch_end(self):
            total = int(self.all_gather(self.seen).sum())
            world = self.trainer.world_size
            expected = math.ceil(len(self.data.y_train) / world) * world  # DistributedSampler pads
            if total != expected:
                raise RuntimeError(f"the ranks saw {total} samples this epoch, expected one full epoch ({expected})")
            self.epoch_totals.append(total)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.val_bacc.update(logits, y)
            self.val_shot.update(logits, y)
            self.log("val/bal_acc", self.val_bacc, on_epoch=True, prog_bar=True)

        def on_validation_epoch_end(self):
            self.log_dict({f"val/{k}": v.float() for k, v in self.val_shot.compute().items()})
            self.val_shot.reset()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="tailwise + Lightning on long-tailed Fashion-MNIST")
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch, one CPU process")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args(argv)
    if L is None:
        print("examples/lightning_module.py: lightning is not installed (pip install lightning); skipping.")
        return 0
    torch.set_num_threads(min(2, torch.get_num_threads()))
    L.seed_everything(0, workers=True, verbose=False)
    data = load_long_tailed(smoke=args.smoke)
    epochs = args.epochs or (1 if args.smoke else 8)
    module = LitLongTail(data.class_counts.tolist(), data.many, data.few, data.x_train.shape[1])
    module.data, module.epoch_totals = data, []
    strategy = "ddp" if args.devices > 1 else "auto"
    trainer = L.Trainer(max_epochs=epochs, accelerator=args.accelerator, devices=args.devices, strategy=strategy,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for key in ("val/bal_acc", "val/many", "val/medium", "val/few", "val/overall"):
        if key not in metrics:
            raise RuntimeError(f"{key} was not logged; got {sorted(metrics)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "last.ckpt")
        trainer.save_checkpoint(path)  # collective under DDP; rank 0 writes
        if trainer.is_global_zero:
            restored = LitLongTail.load_from_checkpoint(path, map_location="cpu")
            for name in ("pos_grad", "neg_grad"):
                saved, back = getattr(module.criterion, name).cpu(), getattr(restored.criterion, name)
                if not torch.equal(saved, back) or not bool(saved.abs().sum() > 0):
                    raise RuntimeError(f"EQLv2 {name} was not restored from the checkpoint")
    if trainer.is_global_zero:
        print(f"{data.name}-LT, {trainer.world_size} process(es), {epochs} epoch(s); samples seen per epoch "
              f"over all ranks: {module.epoch_totals} (training set {len(data.y_train)})")
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())))
        print("  EQLv2 gradient statistics restored from the checkpoint")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
