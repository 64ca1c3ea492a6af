"""``test`` for models that reconstruct their input: seed 002's paired metrics, a JSON/markdown report, W&B.

A mixin for ``GenerativeModule``s that also meet the ``Reconstructs`` contract (``reconstruct(x, batch_idx)``)
and take ``lpips_weights`` / ``report_dir`` arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.contract import Reconstructs
from lightning_modules.wandb_utils import get_wandb_logger
from metrics.reconstruction import DIRECTIONS, ReconstructionMetrics, lpips_model
from metrics.report import write_report


class ReconstructionEvaluation(Reconstructs):
    lpips_weights: str | None = None
    report_dir: str | None = None

    def on_test_start(self) -> None:
        net, reason = lpips_model(self.lpips_weights)
        self._skipped = {"lpips": reason} if reason else {}
        if reason:
            rank_zero_info(f"LPIPS skipped: {reason}")
        self.test_metrics = ReconstructionMetrics(net).to(self.device)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        x_hat = self.reconstruct(x, batch_idx)
        self.test_metrics.update(self.to_unit(x_hat), self.to_unit(x))

    def on_test_epoch_end(self) -> None:
        values = {k: float(v) for k, v in self.test_metrics.compute().items()}  # synced across ranks
        for k, v in values.items():
            self.log(f"test/{k}", v, rank_zero_only=True)
        if not self.trainer.is_global_zero:
            return
        dm = self.trainer.datamodule
        dataset = getattr(dm, "name", "unknown")
        provenance = {**self.provenance(), "test_images": int(self.test_metrics.count),
                      "ckpt_path": str(self.trainer.ckpt_path), "world_size": self.trainer.world_size,
                      "split": "test", "data": getattr(dm, "info", {}), "torch": torch.__version__,
                      "hardware": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
        model = type(self).__name__.replace("Module", "")
        out = Path(self.report_dir or Path(self.trainer.default_root_dir) / "eval")
        json_path, md_path = write_report(out, f"{model}_{dataset}", model, dataset, values, provenance, self._skipped)
        print(f"Wrote {json_path} and {md_path}")
        logger = get_wandb_logger(self.trainer)
        if logger is not None:
            logger.log_table(key=f"test/{model}_metrics", columns=["metric", "value", "better"],
                             data=[[k, v, DIRECTIONS[k]] for k, v in values.items()])
