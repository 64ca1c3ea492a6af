"""t-SNE of encoded validation images coloured by class (seed 002 §5.4, Figs. 7.3/7.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from lightning_modules.contract import Encodes
from lightning_modules.wandb_utils import get_wandb_logger


class LatentTSNE(Callback):
    """After the listed epochs (1-based, like the thesis' 10, 20, 40, 50), embeds the encoder means μ of up
    to ``max_points`` validation images in 2-D with t-SNE and logs the scatter plot.

    Args:
        epochs: 1-based epochs after which to plot.
        max_points: images encoded (seed 002: 3000).
        perplexity: t-SNE perplexity.
        seed: t-SNE random state.
        save_dir: folder for PNG copies (default: <default_root_dir>/latents).
    """

    def __init__(self, epochs: Sequence[int] = (10, 20, 40, 50), max_points: int = 3000, perplexity: float = 30.0,
                 seed: int = 0, save_dir: str | None = None) -> None:
        super().__init__()
        self.epochs, self.max_points, self.perplexity, self.seed = set(epochs), max_points, perplexity, seed
        self.save_dir = save_dir
        self.last_path: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not isinstance(pl_module, Encodes):
            raise TypeError(f"LatentTSNE needs a module with a latent space (the Encodes contract in "
                            f"lightning_modules/contract.py), got {type(pl_module).__name__}; remove it from this config.")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.current_epoch + 1 in self.epochs:
            self._plot(trainer, pl_module)

    @rank_zero_only
    @torch.no_grad()
    def _plot(self, trainer: Trainer, pl_module: LightningModule) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.manifold import TSNE

        mus, ys, n = [], [], 0
        for x, y in trainer.datamodule.val_dataloader():
            mu = pl_module.encode_mean(x.to(pl_module.device))
            mus.append(mu.flatten(1).cpu())
            ys.append(y)
            n += len(y)
            if n >= self.max_points:
                break
        z = torch.cat(mus)[: self.max_points].numpy().astype(np.float32)
        y = torch.cat(ys)[: self.max_points].numpy()
        emb = TSNE(2, perplexity=min(self.perplexity, max(2.0, (len(z) - 1) / 3)), random_state=self.seed).fit_transform(z)
        fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
        points = ax.scatter(emb[:, 0], emb[:, 1], c=y, cmap="tab10", s=4)
        ax.legend(*points.legend_elements(), loc="best", fontsize=7, title="class")
        ax.set_title(f"t-SNE of VAE means μ, epoch {trainer.current_epoch + 1}, {len(z)} val images")
        ax.set_xticks([]), ax.set_yticks([])
        out = Path(self.save_dir or Path(trainer.default_root_dir) / "latents")
        out.mkdir(parents=True, exist_ok=True)
        self.last_path = out / f"tsne_epoch_{trainer.current_epoch + 1:03d}.png"
        fig.savefig(self.last_path, bbox_inches="tight")
        plt.close(fig)
        logger = get_wandb_logger(trainer)
        if logger is not None:
            logger.log_image(key="latent_tsne", images=[str(self.last_path)], step=trainer.global_step)
