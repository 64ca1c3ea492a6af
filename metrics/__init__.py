"""Evaluation metrics (pure torch / torchmetrics, no Lightning): reconstruction and generation quality."""

from metrics.extractors import (
    ClassifierFeatures,
    ExtractorWeightsError,
    FeatureExtractor,
    InceptionV3Features,
    ModuleFeatures,
    as_extractor,
)
from metrics.generation import GenerationMetrics, ReferenceFeatures, reference_features
from metrics.reconstruction import DIRECTIONS, ReconstructionMetrics, edge_similarity, histogram_similarity

__all__ = [
    "ReconstructionMetrics", "DIRECTIONS", "edge_similarity", "histogram_similarity",
    "FeatureExtractor", "InceptionV3Features", "ClassifierFeatures", "ModuleFeatures", "as_extractor",
    "ExtractorWeightsError", "GenerationMetrics", "ReferenceFeatures", "reference_features",
]
