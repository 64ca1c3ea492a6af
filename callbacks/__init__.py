"""Lightning callbacks: EMA, sample grids, run info and throughput, prediction writing."""

from callbacks.ema import EMA
from callbacks.run_info import RunInfo
from callbacks.sample_grid import SampleGrid
from callbacks.sample_writer import SampleWriter

__all__ = ["EMA", "SampleGrid", "RunInfo", "SampleWriter"]
