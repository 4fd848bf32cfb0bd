"""Tensor transforms of video clips: frame index sampling, decoding, resizing, cropping, flipping, normalisation.

Each function does one step on one clip; the input pipeline composes them into training's augmentation and into
the evaluation view that the serving signatures take too (`video_input.eval_views`). Clips are `[T, H, W, C]`. RGB
clips are float in the network's range ([-1, 1], or [0, 1] for the authors' released checkpoints) after
`normalize_rgb`; flow clips are float `[T, H, W, 2]` in [-1, 1] (pixels / bound) after
`flow_quantization.decode_normalized_flow`. A flow field changes with the geometry: a resize scales its components
(`resize` takes `is_flow`), a horizontal flip negates its x component (`normalize_frames` takes `mirrored`, so that
the flip itself can run on the four times smaller uint8 frames).
"""

import tensorflow as tf

from d3d_core import flow_quantization


def clip_span(num_frames, stride):
  """Number of video frames a clip of `num_frames` frames at `stride` covers, first to last."""
  return (num_frames - 1) * stride + 1


def sample_clip_indices(num_video_frames, num_frames, stride, start):
  """Indices `[num_frames]` int32 of a clip starting at `start`; they wrap around (loop the video) past its end.

  `start` may be a vector of starts, giving `[num_starts, num_frames]`.
  """
  start = tf.convert_to_tensor(start, tf.int32)
  offsets = tf.range(num_frames, dtype=tf.int32) * stride
  return tf.math.floormod(start[..., tf.newaxis] + offsets, tf.cast(num_video_frames, tf.int32))


def random_clip_start(num_video_frames, num_frames, stride, seed):
  """Uniform start so that the clip fits in the video (0 when it cannot: the clip then loops)."""
  last_start = tf.maximum(tf.cast(num_video_frames, tf.int32) - clip_span(num_frames, stride), 0)
  return tf.random.stateless_uniform([], seed, minval=0, maxval=last_start + 1, dtype=tf.int32)


def evenly_spaced_clip_starts(num_video_frames, num_frames, stride, num_clips):
  """Starts `[num_clips]` of clips spread evenly from the first to the last frame; the centre clip when 1."""
  last_start = tf.maximum(tf.cast(num_video_frames, tf.int32) - clip_span(num_frames, stride), 0)
  if num_clips == 1:
    return last_start[tf.newaxis] // 2
  positions = tf.linspace(0.0, tf.cast(last_start, tf.float32), num_clips)
  return tf.cast(tf.round(positions), tf.int32)


def decode_frames(encoded, channels=3):
  """Encoded images `[N]` (JPEG or PNG) -> uint8 `[N, H, W, channels]`; all frames of a video share one size."""
  return tf.map_fn(
      lambda image: tf.io.decode_image(image, channels=channels, dtype=tf.uint8, expand_animations=False),
      encoded,
      fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))


# Pixels decoded around a window and then dropped. libjpeg interpolates chroma (4:2:0) from neighbouring blocks
# except at the edge of what it decodes, so a window decoded flush differs from the whole image's decoding along its
# border (up to 6 levels of RGB and 19 of flow measured on the bikes records); one chroma sample, two pixels, of
# margin leaves the window's pixels exactly those of the whole image (tests/test_video_input.py checks it).
DECODE_MARGIN = 2


def decode_window(encoded, window, frame_size, channels=3):
  """Encoded images `[N]` -> uint8 `[N, size, size, channels]`: the square `window` (offset_y, offset_x, size) of
  frames of `frame_size` (height, width), equal to decoding whole frames and cropping them.

  JPEG frames skip the inverse DCT and colour conversion of the blocks outside the window and its margin
  (`decode_and_crop_jpeg`); PNG has no such decoder (flow stored with `--flow_format=png`), so PNG frames are decoded
  whole. Images are decoded with their 3 channels: each of R, G and B needs all three JPEG components (YCbCr), so a
  flow image's unused third channel cannot be skipped in decoding; `channels` < 3 drops the last ones in the copy that
  trims the margin.
  """
  offset_y, offset_x, size = window
  height, width = frame_size
  top, left = tf.maximum(offset_y - DECODE_MARGIN, 0), tf.maximum(offset_x - DECODE_MARGIN, 0)
  bottom = tf.minimum(offset_y + size + DECODE_MARGIN, height)
  right = tf.minimum(offset_x + size + DECODE_MARGIN, width)
  decoded_window = tf.stack([top, left, bottom - top, right - left])

  def fused():  # the margin is trimmed frame by frame, while each frame is still in the CPU's cache
    def decode(image):
      decoded = tf.io.decode_and_crop_jpeg(image, decoded_window, channels=3)
      return decoded[offset_y - top:offset_y - top + size, offset_x - left:offset_x - left + size, :channels]

    return tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))

  def whole():
    return decode_frames(encoded)[:, offset_y:offset_y + size, offset_x:offset_x + size, :channels]

  return tf.cond(tf.io.is_jpeg(encoded[0]), fused, whole)


def normalize_rgb(frames, value_range=(-1.0, 1.0)):
  """uint8 RGB -> float32 scaled linearly so that 0 and 255 become `value_range` (low, high)."""
  low, high = value_range
  return tf.cast(frames, tf.float32) / (255.0 / (high - low)) + low  # [-1, 1]: x / 127.5 - 1; [0, 1]: x / 255


def normalize_frames(frames, is_flow, rgb_range=(-1.0, 1.0), mirrored=False):
  """Decoded uint8 frames -> the network's float32 input: RGB `[..., 3]` in `rgb_range`, or flow `[..., 2]` in
  [-1, 1] (+-bound pixels). `mirrored` (bool, maybe a tensor): the frames were flipped by `horizontal_flip`, so a
  flow's x component changes sign, in the same pass."""
  if is_flow:
    return flow_quantization.decode_normalized_flow(frames, negate_x=mirrored)
  return normalize_rgb(frames, rgb_range)


def short_side_size(height, width, short_side):
  """(height, width) int32 after resizing the shorter side to `short_side`, keeping the aspect ratio."""
  height = tf.cast(height, tf.float32)
  width = tf.cast(width, tf.float32)
  scale = tf.cast(short_side, tf.float32) / tf.minimum(height, width)
  return (tf.cast(tf.round(height * scale), tf.int32), tf.cast(tf.round(width * scale), tf.int32))


def resize(frames, height, width, is_flow=False):
  """Bilinear resize of float `[T, H, W, C]` to `[T, height, width, C]`; no work when the size is unchanged.

  A flow's x and y components are multiplied by the width and height scale factors, then clipped to [-1, 1] as the
  stored flow was truncated to +-bound.
  """
  old_height, old_width = tf.shape(frames)[1], tf.shape(frames)[2]

  def resized():
    images = tf.image.resize(frames, tf.stack([height, width]), method='bilinear')
    if not is_flow:
      return images
    scale = tf.stack([tf.cast(width, tf.float32) / tf.cast(old_width, tf.float32),
                      tf.cast(height, tf.float32) / tf.cast(old_height, tf.float32)])
    return tf.clip_by_value(images * scale, -1.0, 1.0)

  unchanged = tf.logical_and(tf.equal(height, old_height), tf.equal(width, old_width))
  return tf.cond(unchanged, lambda: tf.identity(frames), resized)


def resize_levels(frames, size):
  """Bilinear resize of uint8 `[T, H, W, C]` to `[T, size, size, C]`, rounded back to uint8 levels (half a level
  of error at most); no work when the size is unchanged. For clips handed over as uint8 (`training_clips`): a flow's
  values are not rescaled here, its clip's `FLOW_SCALE` says by how much they must be."""
  def resized():
    images = tf.image.resize(frames, [size, size], method='bilinear')
    return tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)

  unchanged = tf.logical_and(tf.equal(tf.shape(frames)[1], size), tf.equal(tf.shape(frames)[2], size))
  return tf.cond(unchanged, lambda: tf.identity(frames), resized)


def resize_short_side(frames, short_side, is_flow=False):
  """Resizes float `[T, H, W, C]` so the shorter side is `short_side` (flow values scaled with it)."""
  height, width = short_side_size(tf.shape(frames)[1], tf.shape(frames)[2], short_side)
  return resize(frames, height, width, is_flow)


def crop(frames, offset_y, offset_x, size):
  """Square crop `[T, size, size, C]` with its top-left corner at (offset_y, offset_x); fails if it overflows."""
  return tf.image.crop_to_bounding_box(frames, offset_y, offset_x, size, size)


def random_scale_jitter_window(height, width, crop_size, min_short_side, max_short_side, seed):
  """(offset_y, offset_x, window_size) of a random square window that, resized to `crop_size`, is a scale-jittered crop.

  Resizing the short side to a random `short_side` in [min_short_side, max_short_side] and cropping `crop_size`
  pixels shows the same as cropping `crop_size * short / short_side` pixels and resizing those to `crop_size` (up to
  rounding), at a fraction of the cost: only the window is resized.
  """
  size_seed, y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  short_side = tf.random.stateless_uniform(
      [], size_seed, minval=min_short_side, maxval=max_short_side + 1, dtype=tf.int32)
  short = tf.cast(tf.minimum(height, width), tf.float32)
  window = tf.cast(tf.round(crop_size * short / tf.cast(short_side, tf.float32)), tf.int32)
  offset_y = tf.random.stateless_uniform([], y_seed, minval=0, maxval=height - window + 1, dtype=tf.int32)
  offset_x = tf.random.stateless_uniform([], x_seed, minval=0, maxval=width - window + 1, dtype=tf.int32)
  return offset_y, offset_x, window


def evenly_spaced_crop_offsets(height, width, size, num_crops):
  """Offsets (y `[num_crops]`, x `[num_crops]`) of crops spread along the long side, centred on the short side."""
  if num_crops == 1:
    return tf.reshape((height - size) // 2, [1]), tf.reshape((width - size) // 2, [1])
  positions = tf.linspace(0.0, 1.0, num_crops)

  def spread(extent):
    return tf.cast(tf.round(positions * tf.cast(extent - size, tf.float32)), tf.int32)

  def centred(extent):
    return tf.fill([num_crops], (extent - size) // 2)

  return tf.cond(height > width,
                 lambda: (spread(height), centred(width)),
                 lambda: (centred(height), spread(width)))


def horizontal_flip(frames):
  """Mirrors `[T, H, W, C]` left-right. The motion of a flow image mirrors too: pass `mirrored` to
  `normalize_frames`."""
  return tf.reverse(frames, axis=[2])
