"""Training-clip designs that `input_benchmark` times against the pipeline's own (`video_input.decode_train_example`,
which decodes only each frame's crop window and, by default, hands over uint8 clips): two that decode whole frames,
and the pipeline converting to float32 on the host.

Each takes what `decode_train_example` takes, draws the same random numbers from the same seed, and returns its
({modality: float32 `[T, S, S, C]`}, label). `tests/test_video_input.py` holds the pipeline's clips to
`whole_frame_train_example`'s.
"""

import dataclasses

import tensorflow as tf

from d3d_core import network_inputs
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from official_d3d.ops import video_ops


def normalize_frames(frames, is_flow, pixel_range):
  """Uint8 frames -> float32 network input as the former pipeline scaled them (flow `[..., 2]` with scalar ops)."""
  if is_flow:
    return tf.cast(frames[..., :2], tf.float32) / 127.5 - 1.0
  return video_ops.normalize_rgb(frames, d3d_config.PIXEL_RANGES[pixel_range])


def _maybe_flip(clip, is_flow, flip):
  """Flips a float clip when `flip`; a flow's x component changes sign."""
  def flipped():
    mirrored = video_ops.horizontal_flip(clip)
    return mirrored * tf.constant([-1.0, 1.0]) if is_flow else mirrored

  return tf.cond(flip, flipped, lambda: clip)


def _whole_frames(serialized, path, seed, data_config, modalities):
  """(decoded whole frames per modality, label, short-side seed, flip): the draws of `decode_train_example`."""
  encoded, label, media_id, _ = video_input.parse_example(serialized, modalities)
  num_video_frames, label = video_input.check_record(encoded, label, media_id, path, data_config)
  start_seed, window_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  start = video_ops.random_clip_start(num_video_frames, data_config.num_frames, data_config.stride, start_seed)
  indices = video_ops.sample_clip_indices(num_video_frames, data_config.num_frames, data_config.stride, start)
  frames = {name: video_input.gather_and_decode(encoded[name], indices) for name in modalities}
  flip = tf.logical_and(data_config.random_flip, tf.random.stateless_uniform([], flip_seed) < 0.5)
  return frames, label, window_seed, flip


def whole_frame_train_example(serialized, path, seed, data_config: d3d_config.DataConfig, modalities, pixel_range):
  """The pipeline before it decoded windows: whole frames decoded, the scale-jittered window cropped, scaled to
  float, resized to the crop size, flipped."""
  frames, label, window_seed, flip = _whole_frames(serialized, path, seed, data_config, modalities)
  shape = tf.shape(frames[modalities[0]])
  offset_y, offset_x, window = video_ops.random_scale_jitter_window(
      shape[1], shape[2], data_config.crop_size, *data_config.train_resize_range, window_seed)
  features = {}
  for name in modalities:
    is_flow = network_inputs.MODALITIES[name].is_flow
    clip = normalize_frames(video_ops.crop(frames[name], offset_y, offset_x, window), is_flow, pixel_range)
    clip = video_ops.resize(clip, data_config.crop_size, data_config.crop_size, is_flow)
    features[name] = _maybe_flip(clip, is_flow, flip)
  return features, label


def model_garden_train_example(serialized, path, seed, data_config: d3d_config.DataConfig, modalities, pixel_range):
  """Model Garden's `video_input` design: whole frames decoded, scaled to float and resized so that their short side
  is the jittered size, then a random crop, flipped."""
  frames, label, window_seed, flip = _whole_frames(serialized, path, seed, data_config, modalities)
  size_seed, y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(window_seed, 3))
  low, high = data_config.train_resize_range
  short_side = tf.random.stateless_uniform([], size_seed, minval=low, maxval=high + 1, dtype=tf.int32)
  size = data_config.crop_size
  features = {}
  for name in modalities:
    is_flow = network_inputs.MODALITIES[name].is_flow
    clip = video_ops.resize_short_side(normalize_frames(frames[name], is_flow, pixel_range), short_side, is_flow)
    height, width = tf.shape(clip)[1], tf.shape(clip)[2]
    offset_y = tf.random.stateless_uniform([], y_seed, minval=0, maxval=height - size + 1, dtype=tf.int32)
    offset_x = tf.random.stateless_uniform([], x_seed, minval=0, maxval=width - size + 1, dtype=tf.int32)
    clip = video_ops.crop(clip, offset_y, offset_x, size)
    features[name] = _maybe_flip(clip, is_flow, flip)
  return features, label


def host_converted_train_example(serialized, path, seed, data_config: d3d_config.DataConfig, modalities, pixel_range):
  """The pipeline with `data.convert_on_accelerator` off: window decoded, flipped as uint8, converted to float32 on
  the host."""
  return video_input.decode_train_example(serialized, path, seed,
                                          dataclasses.replace(data_config, convert_on_accelerator=False), modalities,
                                          pixel_range)
