"""Evaluation metrics (pure torch / torchmetrics, no Lightning)."""

from metrics.reconstruction import DIRECTIONS, ReconstructionMetrics, edge_similarity, histogram_similarity

__all__ = ["ReconstructionMetrics", "DIRECTIONS", "edge_similarity", "histogram_similarity"]
