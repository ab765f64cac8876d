"""The data stage: reading datasets, decoding images, building volumes and caches.

Imports neither Keras nor TensorFlow.
"""
from core.labels import LABELS, TRAITS, label_space, normalize_label

__all__ = ["LABELS", "TRAITS", "label_space", "normalize_label"]
