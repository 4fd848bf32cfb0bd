"""The training step's conversion of the pipeline's uint8 clips (`training_clips`), on real frames and real flow."""

import numpy as np
import pytest
import tensorflow as tf

import real_clips
from d3d_core import flow_quantization
from official_d3d.configs import d3d_config
from official_d3d.ops import training_clips
from official_d3d.ops import video_ops
from tfrecord_tools import flow_backends

BOUND = 20.0


@pytest.fixture(scope='module')
def uint8_batch(bikes_video):
  """Two clips of 4 real frames (40x32) and their Farneback flow as the pipeline hands them over: uint8, flow
  quantised (x, y, 0)."""
  frames = real_clips.read_frames(bikes_video, 6, 40, 32)
  flow = flow_quantization.quantize_flow(flow_backends.OpenCVFarneback().pair_flows(frames), BOUND)  # (x, y, 0)
  return {'rgb': np.stack([frames[0:4], frames[1:5]]), 'flow': np.stack([flow[0:4], flow[1:5]])}


def test_uint8_clips_become_what_the_host_pipeline_gives(uint8_batch):
  """Clip 0 as it is, clip 1 mirrored, flow scaled by 1 and 6 (the second saturating: it holds up to 3.8 px): each
  converted clip equals the host's float32 path on the same clip (`video_ops.normalize_frames` after
  `horizontal_flip`, then `resize`'s flow scaling and clipping)."""
  mirrored, scale = np.array([0, 1], np.uint8), np.array([1.0, 6.0], np.float32)
  batch = {**uint8_batch, training_clips.MIRRORED: mirrored, training_clips.FLOW_SCALE: scale}
  for pixel_range, rgb_range in d3d_config.PIXEL_RANGES.items():
    converted = training_clips.to_network_inputs(tf.nest.map_structure(tf.constant, batch), rgb_range)
    for clip in range(2):
      rgb, flow = uint8_batch['rgb'][clip], uint8_batch['flow'][clip]
      if mirrored[clip]:
        rgb, flow = video_ops.horizontal_flip(rgb), video_ops.horizontal_flip(flow)
      expected_rgb = video_ops.normalize_frames(rgb, False, rgb_range).numpy()
      host_flow = video_ops.normalize_frames(flow, True, mirrored=bool(mirrored[clip])).numpy()
      expected_flow = np.clip(host_flow * scale[clip], -1.0, 1.0)
      np.testing.assert_allclose(converted['rgb'][clip].numpy(), expected_rgb, atol=1e-6, err_msg=pixel_range)
      np.testing.assert_allclose(converted['flow'][clip].numpy(), expected_flow, atol=1e-6)
  assert np.abs(converted['flow'][1].numpy()).max() == 1.0  # scaled flow saturates at the bound
  assert not np.allclose(converted['rgb'][1].numpy(), video_ops.normalize_rgb(uint8_batch['rgb'][1], rgb_range))


def test_float_inputs_pass_unchanged(uint8_batch):
  clips = {'rgb': tf.zeros([1, 2, 4, 4, 3])}
  assert training_clips.to_network_inputs(clips, (-1.0, 1.0)) is clips
  assert not training_clips.is_uint8_batch(clips) and not training_clips.is_uint8_batch(clips['rgb'])


def test_conversion_compiles_with_xla(uint8_batch):
  batch = {**tf.nest.map_structure(tf.constant, uint8_batch),
           training_clips.MIRRORED: tf.constant([1, 0], tf.uint8), training_clips.FLOW_SCALE: tf.constant([0.5, 1.5])}
  def convert(inputs):
    return training_clips.to_network_inputs(inputs, (-1.0, 1.0))

  compiled = tf.function(convert, jit_compile=True)(batch)
  eager = convert(batch)
  for name in ('rgb', 'flow'):
    np.testing.assert_allclose(compiled[name].numpy(), eager[name].numpy(), atol=1e-6)
