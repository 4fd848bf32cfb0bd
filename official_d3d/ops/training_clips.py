"""Training clips as the input pipeline hands them over with `data.convert_on_accelerator`, and their conversion to
the networks' float32 input inside the training step, on the accelerator.

The pipeline delivers each modality's clips as the stored images' uint8 pixels `[B, T, S, S, 3]` (flow: quantised
x, y, 0), plus per clip whether it is to be mirrored (`MIRRORED`, uint8 `[B]`, 1 or 0: not bool, which Keras cannot
reduce when it builds a model from a first distributed batch) and, with flow, the factor by which resizing its window
scaled the motion (`FLOW_SCALE`, float32 `[B]`). Why: after JPEG decoding, the largest costs of a training clip on the
CPU were its conversion to float32 and the copy of a float32 batch, four times the bytes of uint8 (BUILD_NOTES, "Where
a training clip's time goes"); on an accelerator the same arithmetic is a few elementwise passes over the batch.

`to_network_inputs` gives what the pipeline's float32 path gives (`video_ops.normalize_frames`, `video_ops.resize`),
up to float32 rounding, and to half a uint8 level where scale jitter resized the window (`video_ops.resize_levels`).
It uses plain arithmetic, which XLA compiles on every device.
"""

from typing import Dict, Tuple

import tensorflow as tf

from d3d_core import network_inputs
from official_d3d.ops import video_ops

MIRRORED = 'mirrored'
FLOW_SCALE = 'flow_scale'
PARAMETERS = (MIRRORED, FLOW_SCALE)


def is_uint8_batch(inputs) -> bool:
  """Whether `inputs` is a batch of the pipeline's uint8 clips (rather than float32 clips, or one tensor)."""
  return isinstance(inputs, dict) and MIRRORED in inputs


def _per_clip(values):
  """`[B]` or `[B, C]` -> `[B, 1, 1, 1, C]` (C = 1 for `[B]`), to broadcast over clips `[B, T, H, W, C]`."""
  channels = values.shape[-1] if values.shape.rank == 2 else 1
  return tf.reshape(values, [-1, 1, 1, 1, channels])


def flip_clips(clips, mirrored):
  """Mirrors left-right the clips `[B, T, H, W, C]` for which `mirrored` `[B]` is true (bool, or nonzero)."""
  return tf.where(_per_clip(tf.cast(mirrored, tf.bool)), tf.reverse(clips, axis=[3]), clips)


def flow_to_network_input(clips, mirrored, scale):
  """uint8 flow clips `[B, T, S, S, >=2]` (x, y, ...) -> float32 `[B, T, S, S, 2]` in [-1, 1] (pixels / bound):
  mirrored clips negate x, and each clip's components scale by `scale` `[B]`, clipped as the stored flow was
  truncated to +-bound."""
  flow = tf.cast(flip_clips(clips[..., :2], mirrored), tf.float32) / 127.5 - 1.0
  factors = tf.stack([tf.where(tf.cast(mirrored, tf.bool), -scale, scale), scale], axis=-1)
  return tf.clip_by_value(flow * _per_clip(factors), -1.0, 1.0)


def to_network_inputs(inputs, rgb_range: Tuple[float, float]) -> Dict[str, tf.Tensor]:
  """The float32 clips {modality: `[B, T, S, S, C]`} of a uint8 training batch, RGB scaled to `rgb_range`; any other
  input (float32 clips: evaluation, or training with the conversion in the pipeline) unchanged."""
  if not is_uint8_batch(inputs):
    return inputs
  mirrored = inputs[MIRRORED]
  converted = {}
  for name, clips in inputs.items():
    if name in PARAMETERS:
      continue
    if network_inputs.MODALITIES[name].is_flow:
      converted[name] = flow_to_network_input(clips, mirrored, inputs[FLOW_SCALE])
    else:
      converted[name] = video_ops.normalize_rgb(flip_clips(clips, mirrored), rgb_range)
  return converted
