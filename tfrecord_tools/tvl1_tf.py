"""TV-L1 optical flow in TensorFlow, following OpenCV's DualTVL1 step by step: batched, XLA-compilable, any device.

The method is Zach, Pock and Bischof (2007) as written by Sanchez Perez, Meinhardt-Llopis and Facciolo (IPOL 2013) and
ported to OpenCV (`cv2.optflow.DualTVL1OpticalFlow`). OpenCV's choices are kept because the flow teacher is trained on
OpenCV flow: intensities on the 0..255 scale (float input is multiplied by 255), a pyramid of plain bilinear
down-scalings by `scale_step` (no Gaussian smoothing), centred gradients of the second image warped together with it by
bicubic interpolation (Keys, a = -0.75) with zeros outside the frame, forward differences and backward divergence for
the dual variables, a 5x5 median of the flow (replicated border) before every outer iteration, the stopping rule
`sum |u_new - u|^2 <= epsilon^2 * height * width` per warp, and bilinear up-sampling of the flow times 1 / scale_step.

In a batch every sample follows OpenCV's schedule on its own: a sample whose update fell under epsilon is frozen until
the next warp, and the loops end when all samples have converged or at the iteration limits. All shapes inside a
scale are static, so `tf.function(tvl1_flow, jit_compile=True)` compiles to one XLA program per input shape. Frames
of other sizes can share that program (shape buckets): each fills the top-left corner of the arrays and its own size
at every scale is an input, which every border rule (gradients, warps, medians, resizes, the stopping rule) follows,
so the padding never reaches the flow inside the frame. Internally fields are `[channel, batch, height, width]` so
that every stencil works on the two minor axes.
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from d3d_core import tvl1_params

# OpenCV stops adding scales once a side would fall below this many pixels.
_MIN_PYRAMID_SIDE = 16
# Keys' cubic convolution parameter used by OpenCV's INTER_CUBIC.
_CUBIC_A = -0.75
_MAX_ITERATIONS_PER_CHECK = 5


def tvl1_flow(image0, image1, params=tvl1_params.Tvl1Params(), initial_flow=None, iterations_per_check=None,
              frame_sizes=None):
  """Dense flow from `image0` to `image1`, as OpenCV's DualTVL1 computes it.

  Args:
    image0, image1: grayscale frames `[batch, height, width]` with static height and width; uint8 in 0..255 or float
      in [0, 1] (both dtypes alike).
    params: OpenCV's DualTVL1 parameters (`Tvl1Params`), OpenCV's defaults unless given.
    initial_flow: optional float `[batch, height, width, 2]` to start from, as OpenCV's `useInitialFlow`: it is
      scaled down to the coarsest scale (finer scales start from the up-sampled coarser solution, as in OpenCV).
    iterations_per_check: inner iterations between two tests of "all samples converged". It never changes the result
      (converged samples are frozen by a mask) and only trades wasted masked work for fewer loop-condition round
      trips on accelerators; must divide `inner_iterations`. Default: its largest divisor up to 5.
    frame_sizes: optional int32 `[scales, 2]` (`frame_pyramid_sizes`): the frames' (height, width) at each scale when
      they fill only the top-left corner of larger arrays; the rest of the arrays is ignored and its flow is
      meaningless. A tensor, so that frames of any size up to the arrays' share one program. Default: the arrays'.

  Returns:
    float32 `[batch, height, width, 2]`: flow in pixels, x then y, such that image1(p + flow(p)) ~ image0(p).
  """
  inner_iterations = params.inner_iterations
  if iterations_per_check is None:
    iterations_per_check = max(d for d in range(1, _MAX_ITERATIONS_PER_CHECK + 1) if inner_iterations % d == 0)
  if iterations_per_check < 1 or inner_iterations % iterations_per_check:
    raise ValueError(f'iterations_per_check ({iterations_per_check}) must divide inner_iterations '
                     f'({inner_iterations})')
  intensity0, intensity1 = _to_intensities(image0, image1)
  height, width = intensity0.shape[1:]
  sizes = pyramid_sizes(height, width, params.nscales, params.scale_step)
  valid = _frame_sizes(frame_sizes, sizes)
  pyramid0, pyramid1 = [intensity0], [intensity1]
  for level, size in enumerate(sizes[1:]):
    pyramid0.append(_downscale(pyramid0[-1], size, params.scale_step, valid[level]))
    pyramid1.append(_downscale(pyramid1[-1], size, params.scale_step, valid[level]))

  flow = _coarsest_flow(initial_flow, intensity0, sizes, valid, params)
  for level in reversed(range(len(sizes))):
    if level < len(sizes) - 1:
      flow = _upsample_flow(flow, sizes[level], valid[level + 1], valid[level], params.scale_step)
    flow = _solve_level(pyramid0[level], pyramid1[level], valid[level], flow, params, iterations_per_check)
  return tf.transpose(flow[:2], [1, 2, 3, 0])


def pyramid_sizes(height, width, nscales, scale_step):
  """(height, width) of each scale, finest first, as OpenCV's `resize(fx=fy=scale_step)` rounds them."""
  sizes = [(height, width)]
  for _ in range(1, nscales):
    size = tuple(int(round(side * scale_step)) for side in sizes[-1])
    if min(size) < _MIN_PYRAMID_SIDE:
      break
    sizes.append(size)
  return sizes


def frame_pyramid_sizes(height, width, params, array_size):
  """`tvl1_flow`'s `frame_sizes` for a height x width frame in arrays of `array_size` (height, width).

  The frame must have as many scales as the arrays: OpenCV would stop its pyramid earlier on a smaller frame, so
  arrays for it need `params` with fewer scales (`bucket_params`).
  """
  sizes = pyramid_sizes(height, width, params.nscales, params.scale_step)
  array_sizes = pyramid_sizes(*array_size, params.nscales, params.scale_step)
  if len(sizes) != len(array_sizes) or any(s > a for size, array in zip(sizes, array_sizes)
                                           for s, a in zip(size, array)):
    raise ValueError(f'a {height}x{width} frame does not fit the scales of {array_size[0]}x{array_size[1]} arrays '
                     f'with {params.nscales} scales')
  return np.array(sizes, np.int32)


def bucket_params(height, width, params):
  """`params` with the number of scales OpenCV's pyramid reaches on a height x width frame."""
  return dataclasses.replace(params, nscales=len(pyramid_sizes(height, width, params.nscales, params.scale_step)))


def _frame_sizes(frame_sizes, sizes):
  """Per scale, the frame's (height, width) as two int32 scalars: `frame_sizes`' rows, or the arrays' sizes."""
  if frame_sizes is None:
    return [(tf.constant(height), tf.constant(width)) for height, width in sizes]
  frame_sizes = tf.convert_to_tensor(frame_sizes, tf.int32)
  if frame_sizes.shape != (len(sizes), 2):
    raise ValueError(f'tvl1_flow: frame_sizes must be [{len(sizes)}, 2] (one row per scale), got {frame_sizes.shape}')
  return [tuple(tf.unstack(row)) for row in tf.unstack(frame_sizes)]


def _valid_mask(shape, valid):
  """float32 `[height, width]` of ones inside the frame (`valid` rows and columns), zeros in the padding."""
  rows = tf.range(shape[0]) < valid[0]
  columns = tf.range(shape[1]) < valid[1]
  return tf.cast(rows[:, tf.newaxis] & columns, tf.float32)


def _coarsest_flow(initial_flow, intensity0, sizes, valid, params):
  """Starting flow `[channels, batch, height, width]` at the coarsest scale; gamma adds an illumination channel."""
  batch = tf.shape(intensity0)[0]
  illumination = [tf.zeros([1, batch, *sizes[-1]], tf.float32)] if params.gamma else []
  if initial_flow is None:
    return tf.concat([tf.zeros([2, batch, *sizes[-1]], tf.float32)] + illumination, axis=0)
  initial_flow = tf.convert_to_tensor(initial_flow, tf.float32)
  if not initial_flow.shape.is_compatible_with(intensity0.shape.concatenate(2)):
    raise ValueError(f'tvl1_flow: initial_flow must be [batch, height, width, 2] like the frames '
                     f'{intensity0.shape}, got {initial_flow.shape}')
  flow = tf.transpose(initial_flow, [3, 0, 1, 2])
  for level, size in enumerate(sizes[1:]):
    flow = _downscale(flow, size, params.scale_step, valid[level]) * params.scale_step
  return tf.concat([flow] + illumination, axis=0)


def _to_intensities(image0, image1):
  """Both frames as float32 on OpenCV's 0..255 scale, after checking they are alike `[batch, height, width]`."""
  image0 = tf.convert_to_tensor(image0)
  image1 = tf.convert_to_tensor(image1)
  if image0.dtype != image1.dtype:
    raise ValueError(f'tvl1_flow: image0 is {image0.dtype.name} but image1 is {image1.dtype.name}')
  if image0.shape.rank != 3 or not image0.shape[1:].is_fully_defined():
    raise ValueError(f'tvl1_flow: frames must be [batch, height, width] with static height and width, got '
                     f'{image0.shape}')
  if not image0.shape.is_compatible_with(image1.shape):
    raise ValueError(f'tvl1_flow: image0 {image0.shape} and image1 {image1.shape} differ in shape')
  if min(image0.shape[1:]) < 3:
    raise ValueError(f'tvl1_flow: frames must be at least 3x3 pixels, got {image0.shape[1:]}')
  if image0.dtype == tf.uint8:
    scale = 1.0
  elif image0.dtype.is_floating:
    scale = 255.0
  else:
    raise ValueError(f'tvl1_flow: frames must be uint8 (0..255) or float (0..1), got {image0.dtype.name}')
  return tuple(tf.cast(image, tf.float32) * scale for image in (image0, image1))


def _bilinear_taps(source_size, target_size, source_per_target):
  """Source indices and weights of OpenCV's INTER_LINEAR resize along one axis (pixel centres, clamped at edges).

  `source_size` (the frame's, a scalar tensor) clamps the taps; `target_size` is the array's, a Python int.
  """
  position = (tf.range(target_size, dtype=tf.float32) + 0.5) * source_per_target - 0.5
  first = tf.floor(position)
  last = tf.cast(source_size - 1, tf.float32)
  fraction = tf.where((first < 0.0) | (first >= last), 0.0, position - first)
  first = tf.clip_by_value(first, 0.0, last)
  return tf.cast(first, tf.int32), tf.cast(tf.minimum(first + 1.0, last), tf.int32), fraction


def _resize_bilinear(images, size, source_per_target, source_size):
  """OpenCV's INTER_LINEAR resize of `[..., height, width]` to `size`; `source_per_target` is OpenCV's (y, x) scale
  and `source_size` the frame's (height, width) inside `images`."""
  for axis in (-2, -1):
    first, second, fraction = _bilinear_taps(source_size[axis], size[axis], source_per_target[axis])
    fraction = fraction if axis == -1 else fraction[:, tf.newaxis]
    images = (tf.gather(images, first, axis=axis) * (1.0 - fraction) +
              tf.gather(images, second, axis=axis) * fraction)
  return images


def _static_size(images):
  return tuple(tf.constant(side) for side in images.shape[-2:])


def _downscale(images, size, scale_step, source_size=None):
  """The next pyramid level, as OpenCV's `resize(fx=fy=scale_step)`: its sampling grid uses 1 / scale_step exactly."""
  source_size = source_size or _static_size(images)
  return _resize_bilinear(images, size, (1.0 / scale_step, 1.0 / scale_step), source_size)


def _upsample_flow(flow, size, source_size, target_size, scale_step):
  """Flow of a coarser scale resized to `size` and rescaled to its pixels; the illumination channel keeps its value.

  OpenCV resizes the frame's flow to the finer frame size, so the sampling grid follows the frames' sizes.
  """
  ratio = [tf.cast(source, tf.float32) / tf.cast(target, tf.float32)
           for source, target in zip(source_size, target_size)]
  flow = _resize_bilinear(flow, size, ratio, source_size)
  return tf.concat([flow[:2] / scale_step, flow[2:]], axis=0)


def _replicate_pad(images, radius, frame_size=None):
  """Pads the two minor axes by `radius` copies of the frame's edge pixels (past the frame: its edge too)."""
  frame_size = frame_size or _static_size(images)
  for axis in (-2, -1):
    indices = tf.clip_by_value(tf.range(-radius, images.shape[axis] + radius), 0, frame_size[axis] - 1)
    images = tf.gather(images, indices, axis=axis)
  return images


def _centered_gradient(image, frame_size):
  """Half central differences; one-sided halves at the frame's border, as OpenCV's centeredGradient."""
  padded = _replicate_pad(image, 1, frame_size)
  dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
  dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
  return dx, dy


# The stencils of every inner iteration read each field shifted by one row or column, the row or column that falls
# outside masked. On XLA's CPU backend the fastest way to shift depends on the loop (one thread; BUILD_NOTES.md): with
# one pair tested every iteration, slicing and zero-padding (1.82 ms an inner iteration at 256x608 against 2.18 by
# rolling, `benchmarks/tvl1_cpu_settings.py --fixed_iterations=300`); where converged samples are frozen by a select,
# rolling (1.58 ms at 256x480 against 3.79 by padding, an ad-hoc script).


def _shift_by_padding(field, axis, offset):
  """`field` moved by `offset` (+-1) along `axis`, zeros moved in."""
  axis %= field.shape.rank
  kept = slice(None, -1) if offset > 0 else slice(1, None)
  padding = [[0, 0]] * field.shape.rank
  padding[axis] = [1, 0] if offset > 0 else [0, 1]
  return tf.pad(field[(slice(None),) * axis + (kept,)], padding)


def _shift_by_rolling(field, axis, offset):
  """`field` moved by `offset` along `axis`, the values pushed out at one end moved in at the other."""
  return tf.roll(field, offset, axis=axis % field.shape.rank)


def _forward_gradient(field, frame_size, shift):
  """Forward differences, zero on the frame's last column (x) and last row (y) and beyond."""
  height, width = field.shape[-2:]
  inside_x = tf.cast(tf.range(width) < frame_size[1] - 1, tf.float32)
  inside_y = tf.cast(tf.range(height) < frame_size[0] - 1, tf.float32)[:, tf.newaxis]
  dx = (shift(field, -1, -1) - field) * inside_x
  dy = (shift(field, -2, -1) - field) * inside_y
  return dx, dy


def _divergence(px, py, shift):
  """Backward differences with zero before the first row and column: minus the adjoint of `_forward_gradient`."""
  height, width = px.shape[-2:]
  after_first_x = tf.cast(tf.range(width) > 0, tf.float32)
  after_first_y = tf.cast(tf.range(height) > 0, tf.float32)[:, tf.newaxis]
  px_left = shift(px, -1, 1) * after_first_x
  py_up = shift(py, -2, 1) * after_first_y
  return (px - px_left) + (py - py_up)


def _cubic_weights(fraction):
  """Keys' cubic convolution weights of the four taps at offsets -1, 0, 1, 2 from floor(position)."""
  a = _CUBIC_A
  x = fraction + 1.0
  w0 = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
  w1 = ((a + 2.0) * fraction - (a + 3.0)) * fraction * fraction + 1.0
  y = 1.0 - fraction
  w2 = ((a + 2.0) * y - (a + 3.0)) * y * y + 1.0
  return w0, w1, w2, 1.0 - w0 - w1 - w2


def _bicubic_remap(sources, flow_x, flow_y):
  """`sources[c, b](y + flow_y, x + flow_x)` by bicubic interpolation, zero outside the frame (OpenCV's remap).

  Args:
    sources: `[channels, batch, height, width]` images sampled at the same positions.
    flow_x, flow_y: `[batch, height, width]` displacements.
  """
  num_channels, _, height, width = sources.shape
  batch = tf.shape(flow_x)[0]
  padded = tf.pad(sources, [[0, 0], [0, 0], [1, 1], [1, 1]])  # Taps outside the frame land on this zero ring.
  padded_height, padded_width = height + 2, width + 2
  flat = tf.reshape(padded, [num_channels, -1])
  x = tf.range(width, dtype=tf.float32) + flow_x
  y = tf.range(height, dtype=tf.float32)[:, tf.newaxis] + flow_y
  x_floor, y_floor = tf.floor(x), tf.floor(y)
  x_weights, y_weights = _cubic_weights(x - x_floor), _cubic_weights(y - y_floor)
  # Clamped in float before the int32 cast (far or diverged positions would overflow it), to where all four taps of a
  # position outside the frame still fall on the zero ring.
  x_first = tf.cast(tf.clip_by_value(x_floor, -3.0, width + 1.0), tf.int32)
  y_first = tf.cast(tf.clip_by_value(y_floor, -3.0, height + 1.0), tf.int32)
  sample_offset = (tf.range(batch) * (padded_height * padded_width))[:, tf.newaxis, tf.newaxis]
  result = 0.0
  for dy, y_weight in zip(range(-1, 3), y_weights):
    row_offset = sample_offset + (tf.clip_by_value(y_first + dy, -1, height) + 1) * padded_width
    row = 0.0
    for dx, x_weight in zip(range(-1, 3), x_weights):
      index = row_offset + tf.clip_by_value(x_first + dx, -1, width) + 1
      row += x_weight * tf.gather(flat, index, axis=1)
    result += y_weight * row
  return result


@functools.lru_cache(maxsize=None)
def _sorting_network(size):
  """Comparator pairs (i, j), i < j, of Batcher's odd-even merge sort of `size` values.

  Comparators reaching past `size` are dropped, as if the input were padded with +inf, which keeps the network valid.
  """
  pairs = []
  p = 1
  while p < size:
    k = p
    while k >= 1:
      for j in range(k % p, size - k, 2 * k):
        for i in range(min(k, size - j - k)):
          if (i + j) // (2 * p) == (i + j + k) // (2 * p):
            pairs.append((i + j, i + j + k))
      k //= 2
    p *= 2
  return tuple(pairs)


@functools.lru_cache(maxsize=None)
def _median_network(size):
  """The comparators of `_sorting_network(size)` that the middle value depends on, as (i, j, needs_min, needs_max).

  Dropping the rest (about a quarter for 25 values) keeps graphs small to build; XLA would drop them too.
  """
  needed = {size // 2}
  kept = []
  for i, j in reversed(_sorting_network(size)):
    if i in needed or j in needed:
      kept.append((i, j, i in needed, j in needed))
      needed |= {i, j}
  return tuple(reversed(kept))


def _median_filter(field, window, frame_size=None):
  """`window` x `window` median of the two minor axes with the frame's border replicated (OpenCV's medianBlur).

  A min/max selection network keeps it elementwise, so XLA fuses it into one kernel.
  """
  radius = window // 2
  height, width = field.shape[-2:]
  padded = _replicate_pad(field, radius, frame_size)
  values = [padded[..., dy:dy + height, dx:dx + width] for dy in range(window) for dx in range(window)]
  for i, j, needs_min, needs_max in _median_network(len(values)):
    low = tf.minimum(values[i], values[j]) if needs_min else None
    high = tf.maximum(values[i], values[j]) if needs_max else None
    values[i], values[j] = low, high
  return values[len(values) // 2]


def _solve_level(intensity0, intensity1, frame_size, flow, params, iterations_per_check):
  """Refines `flow` `[channels, batch, height, width]` at one scale: `warps` linearisations, each solved to epsilon.

  Outside the frame (`frame_size`) the warped image is zero, as past OpenCV's frame, and no update is counted.
  """
  inside = _valid_mask(intensity0.shape[1:], frame_size)
  gradient_x, gradient_y = _centered_gradient(intensity1, frame_size)
  sources = tf.stack([intensity1, gradient_x, gradient_y]) * inside
  frame_area = tf.cast(frame_size[0] * frame_size[1], tf.float32)
  solver = functools.partial(_solve_linearised, params=params, iterations_per_check=iterations_per_check,
                             scaled_epsilon=np.float32(params.epsilon**2) * frame_area, frame_size=frame_size,
                             inside=inside)

  def warp(index, flow, dual_x, dual_y):
    warped, warped_x, warped_y = tf.unstack(_bicubic_remap(sources, flow[0], flow[1]))
    slopes = [warped_x, warped_y]
    if params.gamma:
      slopes.append(tf.fill(tf.shape(warped_x), np.float32(params.gamma)))
    # Residual at the linearisation point minus its linear part; grad is |grad I1|^2 (OpenCV leaves gamma out).
    residual_constant = warped - warped_x * flow[0] - warped_y * flow[1] - intensity0
    gradient_norm2 = warped_x * warped_x + warped_y * warped_y
    flow, dual_x, dual_y = solver(flow, dual_x, dual_y, tf.stack(slopes), gradient_norm2, residual_constant)
    return index + 1, flow, dual_x, dual_y

  dual = tf.zeros_like(flow)
  _, flow, _, _ = tf.while_loop(lambda index, *_: index < params.warps, warp, (0, flow, dual, dual))
  return flow


def _solve_linearised(flow, dual_x, dual_y, slopes, gradient_norm2, residual_constant, params, iterations_per_check,
                      scaled_epsilon, frame_size, inside):
  """OpenCV's outer (median) and inner (primal-dual) loops for one warp, with the epsilon rule per sample."""
  lambda_theta = np.float32(params.lambda_ * params.theta)
  tau_over_theta = np.float32(params.tau / params.theta)
  theta = np.float32(params.theta)
  tiny = np.finfo(np.float32).eps
  # One sample whose convergence is tested after every iteration leaves the loops as soon as it converges: nothing
  # to freeze, and shifts by padding are the faster then.
  freezes = flow.shape[1] != 1 or iterations_per_check != 1
  shift = _shift_by_rolling if freezes else _shift_by_padding

  def iterate(flow, dual_x, dual_y):
    """One thresholding, primal and dual step; also returns each sample's squared flow update."""
    residual = residual_constant + tf.reduce_sum(slopes * flow, axis=0)
    step = tf.where(residual < -lambda_theta * gradient_norm2, lambda_theta,
                    tf.where(residual > lambda_theta * gradient_norm2, -lambda_theta,
                             tf.where(gradient_norm2 > tiny, -tf.math.divide_no_nan(residual, gradient_norm2), 0.0)))
    new_flow = flow + step * slopes + theta * _divergence(dual_x, dual_y, shift)
    change = tf.reduce_sum(tf.square(new_flow - flow) * inside, axis=[0, 2, 3])
    flow_dx, flow_dy = _forward_gradient(new_flow, frame_size, shift)
    norm = 1.0 + tau_over_theta * tf.sqrt(flow_dx * flow_dx + flow_dy * flow_dy)
    return new_flow, (dual_x + tau_over_theta * flow_dx) / norm, (dual_y + tau_over_theta * flow_dy) / norm, change

  def masked(active, new, old):
    if not freezes:
      return new
    return tf.where(active[tf.newaxis, :, tf.newaxis, tf.newaxis], new, old)

  def masked_iteration(count, flow, dual_x, dual_y, active):
    new_flow, new_dual_x, new_dual_y, change = iterate(flow, dual_x, dual_y)
    return (count + 1, masked(active, new_flow, flow), masked(active, new_dual_x, dual_x),
            masked(active, new_dual_y, dual_y), active & (change > scaled_epsilon))

  def inner(count, flow, dual_x, dual_y, active):
    # A loop with a constant trip count: XLA needs no device-to-host test of its condition.
    _, flow, dual_x, dual_y, active = tf.while_loop(lambda step, *_: step < iterations_per_check, masked_iteration,
                                                    (0, flow, dual_x, dual_y, active))
    return count + iterations_per_check, flow, dual_x, dual_y, active

  def outer(count, flow, dual_x, dual_y, active):
    if params.median_filtering > 1:
      filtered = tf.concat([_median_filter(flow[:2], params.median_filtering, frame_size), flow[2:]], axis=0)
      flow = masked(active, filtered, flow)
    _, flow, dual_x, dual_y, active = tf.while_loop(
        lambda count, *state: (count < params.inner_iterations) & tf.reduce_any(state[-1]), inner,
        (0, flow, dual_x, dual_y, active))
    return count + 1, flow, dual_x, dual_y, active

  active = tf.ones(tf.shape(flow)[1:2], tf.bool)
  _, flow, dual_x, dual_y, _ = tf.while_loop(
      lambda count, *state: (count < params.outer_iterations) & tf.reduce_any(state[-1]), outer,
      (0, flow, dual_x, dual_y, active))
  return flow, dual_x, dual_y


def bucket_shape(height, width, multiple):
  """The array size that a height x width frame is padded to: each side rounded up to a multiple of `multiple`."""
  return tuple(-(-side // multiple) * multiple for side in (height, width))


class TfTvl1Backend:
  """Frame pairs -> TV-L1 flow in fixed-size, XLA-compiled batches: the converter's `--flow_backend=tf`.

  Pairs from one or several videos go through one compiled program per shape bucket: frames are padded to sides that
  are multiples of `bucket_multiple`, so a data set of many frame sizes compiles a few programs, and the padding
  changes no flow inside the frame (`tvl1_flow`'s `frame_sizes`). The last partial batch is padded with copies of its
  own pairs, which converge exactly as the originals do, so it costs no extra iterations.
  """

  def __init__(self, params: tvl1_params.Tvl1Params = tvl1_params.Tvl1Params(), batch_size: int = 32,
               jit_compile: bool = True, bucket_multiple: int = 1, iterations_per_check: int = None):
    if batch_size < 1:
      raise ValueError(f'flow batch size must be at least 1, got {batch_size}')
    if bucket_multiple < 1:
      raise ValueError(f'flow bucket multiple must be at least 1, got {bucket_multiple}')
    self.params = params
    self.batch_size = batch_size
    self.bucket_multiple = bucket_multiple
    self._jit_compile = jit_compile
    self._iterations_per_check = iterations_per_check  # tvl1_flow's; None: its default
    self._programs = {}  # number of scales -> tf.function, which compiles once per bucket shape

  def _program(self, params: tvl1_params.Tvl1Params):
    if params.nscales not in self._programs:
      # The Python control flow of tvl1_flow is static, so autograph has nothing to convert.
      self._programs[params.nscales] = tf.function(
          functools.partial(tvl1_flow, params=params, iterations_per_check=self._iterations_per_check),
          jit_compile=self._jit_compile, autograph=False)
    return self._programs[params.nscales]

  def __call__(self, frames0, frames1):
    """Grayscale uint8 (or [0, 1] float) `[pairs, height, width]` twice -> float32 `[pairs, height, width, 2]`."""
    frames0, frames1 = np.asarray(frames0), np.asarray(frames1)
    if frames0.shape != frames1.shape or frames0.ndim != 3:
      raise ValueError(f'TfTvl1Backend: expected two [num_pairs, height, width] arrays of one shape, got '
                       f'{frames0.shape} and {frames1.shape}')
    num_pairs, height, width = frames0.shape
    if not num_pairs:
      return np.zeros(frames0.shape + (2,), np.float32)
    array_size = bucket_shape(height, width, self.bucket_multiple)
    params = bucket_params(height, width, self.params)
    frame_sizes = frame_pyramid_sizes(height, width, params, array_size)
    padding = [(0, 0), (0, array_size[0] - height), (0, array_size[1] - width)]
    frames0, frames1 = np.pad(frames0, padding), np.pad(frames1, padding)
    flows = []
    for start in range(0, num_pairs, self.batch_size):
      count = min(self.batch_size, num_pairs - start)
      repeats = np.arange(self.batch_size) % count
      batch0, batch1 = frames0[start:start + count][repeats], frames1[start:start + count][repeats]
      flows.append(self._program(params)(batch0, batch1, frame_sizes=frame_sizes).numpy()[:count, :height, :width])
    return np.concatenate(flows)
