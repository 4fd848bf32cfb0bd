"""Storage encoding of optical flow: pixels clipped to +-bound, mapped linearly onto 0..255.

The flow of a frame is stored as a 3-channel image (x, y, 0), as MediaPipe does. Value v decodes to
`(v / 255 * 2 - 1) * bound` pixels; the round trip error is at most half a quantisation step, `bound / 255`.
The writer uses the NumPy functions, the input pipeline the TensorFlow one.
"""

import numpy as np
import tensorflow as tf


def quantize_flow(flow, bound):
  """Flow `[..., 2]` float pixels -> uint8 `[..., 3]` image (x, y, 0)."""
  flow = np.asarray(flow, np.float32)
  scaled = (np.clip(flow, -bound, bound) / bound + 1.0) * 127.5
  quantized = np.rint(scaled).astype(np.uint8)
  return np.concatenate([quantized, np.zeros_like(quantized[..., :1])], axis=-1)


def dequantize_flow(image, bound):
  """uint8 `[..., >=2]` image -> float32 flow `[..., 2]` in pixels."""
  image = np.asarray(image)[..., :2].astype(np.float32)
  return (image / 127.5 - 1.0) * bound


def max_quantization_error(bound):
  """Largest round-trip error, in pixels, for flow inside +-bound."""
  return bound / 255.0


def decode_normalized_flow(image, negate_x=False):
  """uint8 tensor `[..., >=2]` -> float32 flow `[..., 2]` in [-1, 1] (pixels / bound), as the network takes it.

  `negate_x` (bool, maybe a tensor) mirrors the motion of a horizontally flipped image at no extra cost. One fused
  pass (`Dequantize`, `min + v * (max - min) / 255` per channel, a reversed range negating), since TensorFlow's CPU
  kernels broadcast a per-channel factor over a clip several times slower than a scalar.
  """
  high = tf.stack([tf.where(negate_x, -1.0, 1.0), 1.0])
  return tf.raw_ops.Dequantize(input=tf.bitcast(image[..., :2], tf.quint8), min_range=-high, max_range=high,
                               mode='MIN_COMBINED', axis=len(image.shape) - 1)
