"""Video input pipelines: Kinetics layouts, PyAV decoding, samplers, augmentation, TFRecords,
the metadata each dataset carries (`dataset_info`) and a synthetic motion dataset."""

from keras_vtn.data.dataset import DecodeReport, kinetics400, video_dataset
from keras_vtn.data.decode import DecodeError, VideoInfo, probe, read_frames
from keras_vtn.data.info import DatasetInfo, dataset_info
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
from keras_vtn.data.splits import LAYOUTS, make_dataset, shuffle_frames
from keras_vtn.data.synthetic import MOTION_CLASSES, generate_motion_dataset
from keras_vtn.data.tfrecord import prepare, tfrecord_dataset

__all__ = [
    "KINETICS400_LABELS",
    "LAYOUTS",
    "MOTION_CLASSES",
    "DatasetInfo",
    "DecodeError",
    "DecodeReport",
    "Records",
    "Sampler",
    "VideoInfo",
    "class_folders",
    "dataset_info",
    "dense_indices",
    "generate_motion_dataset",
    "kinetics400",
    "kinetics_csv",
    "label_map",
    "list_file",
    "make_dataset",
    "prepare",
    "probe",
    "read_frames",
    "read_kinetics_csv",
    "shuffle_frames",
    "tfrecord_dataset",
    "time_indices",
    "uniform_indices",
    "video_dataset",
]
