"""Video input pipelines: Kinetics layouts, PyAV decoding, samplers, augmentation, TFRecords."""

from keras_vtn.data.dataset import DecodeReport, kinetics400, video_dataset
from keras_vtn.data.decode import DecodeError, VideoInfo, probe, read_frames
from keras_vtn.data.layouts import (
    KINETICS400_LABELS,
    Records,
    class_folders,
    kinetics_csv,
    label_map,
    list_file,
    read_kinetics_csv,
)
from keras_vtn.data.samplers import Sampler, dense_indices, time_indices, uniform_indices
from keras_vtn.data.tfrecord import prepare, tfrecord_dataset

__all__ = [
    "KINETICS400_LABELS",
    "DecodeError",
    "DecodeReport",
    "Records",
    "Sampler",
    "VideoInfo",
    "class_folders",
    "dense_indices",
    "kinetics400",
    "kinetics_csv",
    "label_map",
    "list_file",
    "prepare",
    "probe",
    "read_frames",
    "read_kinetics_csv",
    "tfrecord_dataset",
    "time_indices",
    "uniform_indices",
    "video_dataset",
]
