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
scale are static, so `tf.function(tvl1_flow, jit_compile=True)` compiles to one XLA program per input shape.
Internally fields are `[channel, batch, height, width]` so that every stencil works on the two minor axes.
"""

import functools

import numpy as np
import tensorflow as tf

from d3d_core import tvl1_params

# OpenCV stops adding scales once a side would fall below this many pixels.
_MIN_PYRAMID_SIDE = 16
# Keys' cubic convolution parameter used by OpenCV's INTER_CUBIC.
_CUBIC_A = -0.75
_MAX_ITERATIONS_PER_CHECK = 5


def tvl1_flow(image0, image1, params=tvl1_params.Tvl1Params(), initial_flow=None, iterations_per_check=None):
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
  pyramid0, pyramid1 = [intensity0], [intensity1]
  for size in sizes[1:]:
    pyramid0.append(_downscale(pyramid0[-1], size, params.scale_step))
    pyramid1.append(_downscale(pyramid1[-1], size, params.scale_step))

  flow = _coarsest_flow(initial_flow, intensity0, sizes, params)
  for level in reversed(range(len(sizes))):
    if level < len(sizes) - 1:
      flow = _upsample_flow(flow, sizes[level], params.scale_step)
    flow = _solve_level(pyramid0[level], pyramid1[level], flow, params, iterations_per_check)
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


def _coarsest_flow(initial_flow, intensity0, sizes, params):
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
  for size in sizes[1:]:
    flow = _downscale(flow, size, params.scale_step) * params.scale_step
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
  """Source indices and weights of OpenCV's INTER_LINEAR resize along one axis (pixel centres, clamped at edges)."""
  position = (np.arange(target_size) + 0.5) * source_per_target - 0.5
  first = np.floor(position).astype(np.int64)
  fraction = position - first
  before_start = first < 0
  past_end = first >= source_size - 1
  fraction[before_start | past_end] = 0.0
  first = np.clip(first, 0, source_size - 1)
  second = np.minimum(first + 1, source_size - 1)
  return first, second, fraction.astype(np.float32)


def _resize_bilinear(images, size, source_per_target):
  """OpenCV's INTER_LINEAR resize of `[..., height, width]` to `size`; `source_per_target` is OpenCV's (y, x) scale."""
  for axis, target_size, scale in ((-2, size[0], source_per_target[0]), (-1, size[1], source_per_target[1])):
    first, second, fraction = _bilinear_taps(images.shape[axis], target_size, scale)
    fraction = fraction if axis == -1 else fraction[:, np.newaxis]
    images = (tf.gather(images, first, axis=axis) * (1.0 - fraction) +
              tf.gather(images, second, axis=axis) * fraction)
  return images


def _downscale(images, size, scale_step):
  """The next pyramid level, as OpenCV's `resize(fx=fy=scale_step)`: its sampling grid uses 1 / scale_step exactly."""
  return _resize_bilinear(images, size, (1.0 / scale_step, 1.0 / scale_step))


def _upsample_flow(flow, size, scale_step):
  """Flow of a coarser scale resized to `size` and rescaled to its pixels; the illumination channel keeps its value."""
  height, width = flow.shape[-2:]
  flow = _resize_bilinear(flow, size, (height / size[0], width / size[1]))
  return tf.concat([flow[:2] / scale_step, flow[2:]], axis=0)


def _replicate_pad(images, radius):
  """Pads the two minor axes by `radius` copies of the edge pixels."""
  for axis in (-2, -1):
    size = images.shape[axis]
    images = tf.gather(images, np.clip(np.arange(-radius, size + radius), 0, size - 1), axis=axis)
  return images


def _centered_gradient(image):
  """Half central differences; one-sided halves at the border, as OpenCV's centeredGradient."""
  padded = _replicate_pad(image, 1)
  dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
  dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
  return dx, dy


def _forward_gradient(field):
  """Forward differences, zero on the last column (x) and last row (y)."""
  dx = tf.pad(field[..., :, 1:] - field[..., :, :-1], [[0, 0]] * (field.shape.rank - 1) + [[0, 1]])
  dy = tf.pad(field[..., 1:, :] - field[..., :-1, :], [[0, 0]] * (field.shape.rank - 2) + [[0, 1], [0, 0]])
  return dx, dy


def _divergence(px, py):
  """Backward differences with zero before the first row and column: minus the adjoint of `_forward_gradient`."""
  px_left = tf.pad(px[..., :, :-1], [[0, 0]] * (px.shape.rank - 1) + [[1, 0]])
  py_up = tf.pad(py[..., :-1, :], [[0, 0]] * (py.shape.rank - 2) + [[1, 0], [0, 0]])
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


def _median_filter(field, window):
  """`window` x `window` median of the two minor axes with a replicated border (OpenCV's medianBlur).

  A min/max selection network keeps it elementwise, so XLA fuses it into one kernel.
  """
  radius = window // 2
  height, width = field.shape[-2:]
  padded = _replicate_pad(field, radius)
  values = [padded[..., dy:dy + height, dx:dx + width] for dy in range(window) for dx in range(window)]
  for i, j, needs_min, needs_max in _median_network(len(values)):
    low = tf.minimum(values[i], values[j]) if needs_min else None
    high = tf.maximum(values[i], values[j]) if needs_max else None
    values[i], values[j] = low, high
  return values[len(values) // 2]


def _solve_level(intensity0, intensity1, flow, params, iterations_per_check):
  """Refines `flow` `[channels, batch, height, width]` at one scale: `warps` linearisations, each solved to epsilon."""
  height, width = intensity0.shape[1:]
  gradient_x, gradient_y = _centered_gradient(intensity1)
  sources = tf.stack([intensity1, gradient_x, gradient_y])
  solver = functools.partial(_solve_linearised, params=params, iterations_per_check=iterations_per_check,
                             scaled_epsilon=np.float32(params.epsilon**2 * height * width))

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
                      scaled_epsilon):
  """OpenCV's outer (median) and inner (primal-dual) loops for one warp, with the epsilon rule per sample."""
  lambda_theta = np.float32(params.lambda_ * params.theta)
  tau_over_theta = np.float32(params.tau / params.theta)
  theta = np.float32(params.theta)
  tiny = np.finfo(np.float32).eps

  def iterate(flow, dual_x, dual_y):
    """One thresholding, primal and dual step; also returns each sample's squared flow update."""
    residual = residual_constant + tf.reduce_sum(slopes * flow, axis=0)
    step = tf.where(residual < -lambda_theta * gradient_norm2, lambda_theta,
                    tf.where(residual > lambda_theta * gradient_norm2, -lambda_theta,
                             tf.where(gradient_norm2 > tiny, -tf.math.divide_no_nan(residual, gradient_norm2), 0.0)))
    new_flow = flow + step * slopes + theta * _divergence(dual_x, dual_y)
    change = tf.reduce_sum(tf.square(new_flow - flow), axis=[0, 2, 3])
    flow_dx, flow_dy = _forward_gradient(new_flow)
    norm = 1.0 + tau_over_theta * tf.sqrt(flow_dx * flow_dx + flow_dy * flow_dy)
    return new_flow, (dual_x + tau_over_theta * flow_dx) / norm, (dual_y + tau_over_theta * flow_dy) / norm, change

  def masked(active, new, old):
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
      filtered = tf.concat([_median_filter(flow[:2], params.median_filtering), flow[2:]], axis=0)
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


class TfTvl1Backend:
  """Frame pairs -> TV-L1 flow in fixed-size, XLA-compiled batches: the converter's `--flow_backend=tf`.

  Pairs from one or several videos of the same frame size go through one compiled program; the last partial batch is
  padded with copies of its own pairs, which converge exactly as the originals do, so it costs no extra iterations.
  """

  def __init__(self, params: tvl1_params.Tvl1Params = tvl1_params.Tvl1Params(), batch_size: int = 32,
               jit_compile: bool = True):
    if batch_size < 1:
      raise ValueError(f'flow batch size must be at least 1, got {batch_size}')
    self.params = params
    self.batch_size = batch_size
    # The Python control flow of tvl1_flow is static, so autograph has nothing to convert.
    self._flow = tf.function(functools.partial(tvl1_flow, params=self.params),
                             jit_compile=jit_compile, autograph=False)

  def __call__(self, frames0, frames1):
    """Grayscale uint8 (or [0, 1] float) `[pairs, height, width]` twice -> float32 `[pairs, height, width, 2]`."""
    frames0, frames1 = np.asarray(frames0), np.asarray(frames1)
    if frames0.shape != frames1.shape or frames0.ndim != 3:
      raise ValueError(f'TfTvl1Backend: expected two [num_pairs, height, width] arrays of one shape, got '
                       f'{frames0.shape} and {frames1.shape}')
    flows = []
    for start in range(0, len(frames0), self.batch_size):
      count = min(self.batch_size, len(frames0) - start)
      padding = np.arange(self.batch_size) % count
      batch0, batch1 = frames0[start:start + count][padding], frames1[start:start + count][padding]
      flows.append(self._flow(batch0, batch1).numpy()[:count])
    if not flows:
      return np.zeros(frames0.shape + (2,), np.float32)
    return np.concatenate(flows)
