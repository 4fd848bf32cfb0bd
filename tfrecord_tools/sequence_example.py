"""Builds one `tf.train.SequenceExample` per video in the MediaSequence layout of `schema`."""

import dataclasses
from typing import Optional, Sequence

import cv2
import numpy as np
import tensorflow as tf

from d3d_core import flow_quantization
from d3d_core import schema

FLOW_FORMATS = ('jpeg', 'png')


@dataclasses.dataclass(frozen=True)
class EncodingConfig:
  """How frames are stored: JPEG quality for RGB, JPEG or lossless PNG for flow, and the flow truncation bound."""
  jpeg_quality: int = 95
  flow_format: str = 'jpeg'
  flow_bound: float = schema.DEFAULT_FLOW_BOUND

  def __post_init__(self):
    if self.flow_format not in FLOW_FORMATS:
      raise ValueError(f'flow_format must be one of {FLOW_FORMATS}, got {self.flow_format!r}')
    if not 1 <= self.jpeg_quality <= 100:
      raise ValueError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality}')


def encode_image(rgb, image_format, jpeg_quality=95):
  """uint8 RGB `[H, W, 3]` -> encoded bytes."""
  bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
  if image_format == 'jpeg':
    ok, buffer = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
  else:
    ok, buffer = cv2.imencode('.png', bgr)
  if not ok:
    raise ValueError(f'OpenCV could not encode a {rgb.shape} frame as {image_format}')
  return buffer.tobytes()


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def build_sequence_example(media_id: str,
                           label_index: int,
                           label_string: str,
                           frames: np.ndarray,
                           timestamps_us: Sequence[int],
                           frame_rate: float,
                           flow: Optional[np.ndarray] = None,
                           data_path: str = '',
                           encoding: EncodingConfig = EncodingConfig()) -> tf.train.SequenceExample:
  """Frames uint8 `[T, H, W, 3]` (RGB) and optional flow float `[T, H, W, 2]` (pixels) -> SequenceExample.

  `example/id` is the media id: unique within a conversion (manifests add a clip's start and end to it when a video
  yields several clips) and the same in every rerun. `clip/end/timestamp` is exclusive, as in MediaPipe: the time
  the frame after the last would have, so [start, end) holds exactly the stored frames.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}')
  if len(timestamps_us) != len(frames):
    raise ValueError(f'{len(timestamps_us)} timestamps for {len(frames)} frames')
  num_frames, height, width, channels = frames.shape
  timestamps = tf.train.FeatureList(feature=[_ints([t]) for t in timestamps_us])

  context = {
      schema.EXAMPLE_ID: _bytes([media_id.encode()]),
      schema.MEDIA_ID: _bytes([media_id.encode()]),
      schema.DATA_PATH: _bytes([data_path.encode()]),
      schema.CLIP_START_TIMESTAMP: _ints([timestamps_us[0]]),
      schema.CLIP_END_TIMESTAMP: _ints([round(timestamps_us[0] + num_frames * 1e6 / frame_rate)]),
      schema.LABEL_INDEX: _ints([label_index]),
      schema.LABEL_STRING: _bytes([label_string.encode()]),
      schema.IMAGE_FORMAT: _bytes([b'JPEG']),
      schema.IMAGE_CHANNELS: _ints([channels]),
      schema.IMAGE_HEIGHT: _ints([height]),
      schema.IMAGE_WIDTH: _ints([width]),
      schema.IMAGE_FRAME_RATE: _floats([frame_rate]),
  }
  feature_lists = {
      schema.IMAGE_ENCODED: tf.train.FeatureList(
          feature=[_bytes([encode_image(f, 'jpeg', encoding.jpeg_quality)]) for f in frames]),
      schema.IMAGE_TIMESTAMP: timestamps,
  }
  if flow is not None:
    flow = np.asarray(flow)
    if flow.shape != (num_frames, height, width, 2):
      raise ValueError(f'flow must be [{num_frames}, {height}, {width}, 2] to match the frames, got {flow.shape}')
    flow_images = flow_quantization.quantize_flow(flow, encoding.flow_bound)
    context.update({
        schema.FLOW_FORMAT: _bytes([encoding.flow_format.upper().encode()]),
        schema.FLOW_CHANNELS: _ints([flow_images.shape[-1]]),
        schema.FLOW_HEIGHT: _ints([height]),
        schema.FLOW_WIDTH: _ints([width]),
        schema.FLOW_FRAME_RATE: _floats([frame_rate]),
        schema.FLOW_BOUND: _floats([encoding.flow_bound]),
    })
    feature_lists[schema.FLOW_ENCODED] = tf.train.FeatureList(
        feature=[_bytes([encode_image(f, encoding.flow_format, encoding.jpeg_quality)]) for f in flow_images])
    feature_lists[schema.FLOW_TIMESTAMP] = timestamps

  return tf.train.SequenceExample(
      context=tf.train.Features(feature=context),
      feature_lists=tf.train.FeatureLists(feature_list=feature_lists))
