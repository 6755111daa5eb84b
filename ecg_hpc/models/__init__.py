"""The study's networks: ResNet-18/34/50 1-D, spectrogram + 2-D ResNet-18, the future-prediction model,
weight transfer between task models and fine-tuning classifiers, and precision options."""

from ecg_hpc.models.architectures import ARCHS, FeatureSpec, build_feature_extractor, build_model
from ecg_hpc.models.future import build_future_model
from ecg_hpc.models.precision import PRECISIONS, configure_precision
from ecg_hpc.models.transfer import find_feature_extractor, load_feature_extractor, save_feature_extractor

__all__ = ["ARCHS", "FeatureSpec", "build_feature_extractor", "build_model", "build_future_model", "PRECISIONS",
           "configure_precision", "find_feature_extractor", "load_feature_extractor", "save_feature_extractor"]
