"""Lightning callbacks: EMA, sample and reconstruction grids, latent t-SNE, run info, prediction writing,
generation metrics (FID/KID/IS/precision-recall), the autoguidance snapshot."""

from callbacks.checkpointing import AtomicCheckpointIO, LastCheckpoint
from callbacks.coigan_grid import COIGANSampleGrid
from callbacks.coigan_writer import COIGANPredictionWriter
from callbacks.ema import EMA
from callbacks.generation_metrics import GenerationMetricsCallback
from callbacks.guide_snapshot import GuideSnapshot
from callbacks.hardware_notice import CPUNotice
from callbacks.latent_tsne import LatentTSNE
from callbacks.reconstruction_grid import ReconstructionGrid
from callbacks.restoration_writer import RestorationWriter
from callbacks.run_info import RunInfo
from callbacks.sample_grid import SampleGrid
from callbacks.sample_writer import SampleWriter

__all__ = ["EMA", "LastCheckpoint", "AtomicCheckpointIO", "SampleGrid", "ReconstructionGrid", "LatentTSNE", "RunInfo",
           "SampleWriter", "GenerationMetricsCallback", "CPUNotice", "RestorationWriter", "COIGANSampleGrid",
           "COIGANPredictionWriter", "GuideSnapshot"]
