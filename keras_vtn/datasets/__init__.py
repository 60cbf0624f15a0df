"""Built-in datasets (generated locally, no download)."""

from keras_vtn.datasets.motion import MOTION_CLASSES, generate_motion_dataset

__all__ = ["MOTION_CLASSES", "generate_motion_dataset"]
