"""Detector runtime for the edge: interface, backend registry, numpy pre/post-processing."""

from edge.detect.base import (
    Detection,
    Detector,
    DetectorConfig,
    DetectorConfigError,
    build_detector,
    get_backend,
    parse_detector_config,
    register_backend,
)
from edge.detect.metadata import ModelMetadata, ModelMetadataError

__all__ = [
    "Detection",
    "Detector",
    "DetectorConfig",
    "DetectorConfigError",
    "ModelMetadata",
    "ModelMetadataError",
    "build_detector",
    "get_backend",
    "parse_detector_config",
    "register_backend",
]
