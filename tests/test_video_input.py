"""Input pipeline on real records: frames of the bikes video with a known flow field, written and read back.

The stored flow encodes where each value came from: its y component is the frame index, its x component grows
with the column. So after the pipeline the flow tells which frames were sampled and which columns were cropped, and
the RGB clip must show the stored frames at exactly those frames and that crop.
"""

import dataclasses

import cv2
import numpy as np
import pytest
import tensorflow as tf

import real_clips

from benchmarks import input_designs
from d3d_core import flow_quantization
from d3d_core import network_inputs
from d3d_core import schema
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from official_d3d.ops import training_clips
from official_d3d.ops import video_ops
from tfrecord_tools import flow_backends
from tfrecord_tools import sequence_example

HEIGHT, WIDTH = 48, 64
BOUND = schema.DEFAULT_FLOW_BOUND
FIRST_INDEX_FLOW = -15.0  # pixels of flow y at frame 0; frame t stores FIRST_INDEX_FLOW + t
COLUMN_FLOW_SLOPE = 0.25  # pixels of flow x per column
FIRST_COLUMN_FLOW = -4.0  # pixels of flow x at column 0: the field is not symmetric, so a flip shows


@pytest.fixture(scope='module')
def bikes_frames(bikes_video):
  """24 real frames, RGB uint8 [24, 48, 64, 3]."""
  capture = cv2.VideoCapture(str(bikes_video))
  frames = []
  while len(frames) < 24:
    ok, bgr = capture.read()
    assert ok, f'could not read frame {len(frames)} of {bikes_video}'
    small = cv2.resize(bgr, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    frames.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
  capture.release()
  return np.stack(frames)


def known_flow(num_frames):
  """Flow in pixels [T, H, W, 2]: x = FIRST_COLUMN_FLOW + slope * column, y = FIRST_INDEX_FLOW + frame index."""
  columns = FIRST_COLUMN_FLOW + COLUMN_FLOW_SLOPE * np.arange(WIDTH, dtype=np.float32)
  flow = np.zeros([num_frames, HEIGHT, WIDTH, 2], np.float32)
  flow[..., 0] = columns
  flow[..., 1] = FIRST_INDEX_FLOW + np.arange(num_frames, dtype=np.float32)[:, None, None]
  return flow


def stored_flow(num_frames):
  """What the network should see of `known_flow` before any transform: quantised, in [-1, 1]."""
  images = flow_quantization.quantize_flow(known_flow(num_frames), BOUND)
  return flow_quantization.decode_normalized_flow(images).numpy()


def make_example(frames, label, with_flow=True, flow_format='png'):
  num_frames = len(frames)
  return sequence_example.build_sequence_example(
      media_id=f'bikes_{label}', label_index=label, label_string=f'class_{label}', frames=frames,
      timestamps_us=[40000 * t for t in range(num_frames)], frame_rate=25.0,
      flow=known_flow(num_frames) if with_flow else None,
      encoding=sequence_example.EncodingConfig(flow_format=flow_format))


def write_shard(path, examples):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for example in examples:
      writer.write(example.SerializeToString())
  return str(path)


def stored_rgb(example):
  """The stored JPEG frames of a record decoded and normalised, as the pipeline must see them [T, H, W, 3]."""
  encoded = example.feature_lists.feature_list[schema.IMAGE_ENCODED].feature
  return np.stack([video_ops.normalize_rgb(tf.io.decode_jpeg(f.bytes_list.value[0])).numpy() for f in encoded])


def frame_indices_from_flow(flow_clip):
  """Frame index [T] each flow frame came from, read back from its y component (averaged: JPEG flow is noisy)."""
  return np.rint(flow_clip[..., 1].mean(axis=(1, 2)) * BOUND - FIRST_INDEX_FLOW).astype(int)


def small_config(**overrides):
  values = dict(num_frames=4, stride=1, crop_size=32, train_resize_range=(HEIGHT, HEIGHT), eval_resize=HEIGHT,
                global_batch_size=4, eval_batch_size=2, shuffle_buffer=8, seed=3)
  values.update(overrides)
  return d3d_config.DataConfig(**values)


def find_crop(rgb_clip, frames, size):
  """(offset_y, offset_x, flipped) of the crop of `frames` equal to `rgb_clip`; fails when there is none."""
  for flipped in (False, True):
    view = frames[:, :, ::-1] if flipped else frames
    for offset_y in range(frames.shape[1] - size + 1):
      for offset_x in range(frames.shape[2] - size + 1):
        if np.allclose(view[:, offset_y:offset_y + size, offset_x:offset_x + size], rgb_clip, atol=1e-5):
          x = frames.shape[2] - size - offset_x if flipped else offset_x
          return offset_y, x, flipped
  raise AssertionError('the RGB clip is no crop of the stored frames at the indices its flow names')


def expected_flow_crop(flow, offset_y, offset_x, flipped, size):
  cropped = flow[:, offset_y:offset_y + size, offset_x:offset_x + size]
  return cropped[:, :, ::-1] * np.array([-1.0, 1.0], np.float32) if flipped else cropped


@pytest.fixture(scope='module')
def shards(tmp_path_factory, bikes_frames):
  """Three shards of two videos each (labels 0..5, lengths 20 and 24 frames), PNG and JPEG flow."""
  root = tmp_path_factory.mktemp('records')
  examples = [make_example(bikes_frames[:20 + 4 * (label % 2)], label, flow_format=('png', 'jpeg')[label // 4])
              for label in range(6)]
  paths = [write_shard(root / f'train-{i:05d}-of-00003.tfrecord', examples[2 * i:2 * i + 2]) for i in range(3)]
  return {'pattern': str(root / 'train-*'), 'paths': paths, 'examples': examples}


def take(dataset, num_batches):
  return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in dataset.take(num_batches)]


def converted(features):
  """A training batch's clips as the network receives them: uint8 clips flipped and converted as the training step
  does (`training_clips`); float32 clips as they are."""
  clips = training_clips.to_network_inputs(tf.nest.map_structure(tf.constant, features), (-1.0, 1.0))
  return {name: clip.numpy() for name, clip in clips.items()}


def test_sample_clip_indices_wrap_around_short_videos():
  np.testing.assert_array_equal(video_ops.sample_clip_indices(5, 8, 1, 0), [0, 1, 2, 3, 4, 0, 1, 2])
  np.testing.assert_array_equal(video_ops.sample_clip_indices(10, 4, 3, 2), [2, 5, 8, 1])
  np.testing.assert_array_equal(video_ops.sample_clip_indices(10, 2, 2, [0, 3]), [[0, 2], [3, 5]])


def test_evenly_spaced_clip_starts():
  np.testing.assert_array_equal(video_ops.evenly_spaced_clip_starts(20, 4, 2, 3), [0, 6, 13])
  np.testing.assert_array_equal(video_ops.evenly_spaced_clip_starts(20, 4, 2, 1), [6])  # centre: (20 - 7) // 2
  np.testing.assert_array_equal(video_ops.evenly_spaced_clip_starts(5, 8, 1, 2), [0, 0])


def test_horizontal_flip_mirrors_rgb_and_flow_alike_and_mirrored_flow_negates_x(bikes_frames):
  flipped_rgb = video_ops.horizontal_flip(bikes_frames[:2]).numpy()
  np.testing.assert_array_equal(flipped_rgb, bikes_frames[:2, :, ::-1])
  flow_images = flow_quantization.quantize_flow(known_flow(2), BOUND)
  flow = stored_flow(2)
  flipped_flow = video_ops.normalize_frames(video_ops.horizontal_flip(flow_images), is_flow=True,
                                            mirrored=tf.constant(True)).numpy()
  np.testing.assert_allclose(flipped_flow[..., 0], -flow[:, :, ::-1, 0], atol=1e-6, rtol=0)
  np.testing.assert_allclose(flipped_flow[..., 1], flow[:, :, ::-1, 1], atol=1e-6, rtol=0)
  assert not np.allclose(flipped_flow, flow)


def test_resize_scales_flow_by_each_axis_factor_and_clips():
  flow = np.zeros([1, HEIGHT, WIDTH, 2], np.float32) + np.array([0.1, 0.3], np.float32)
  doubled = video_ops.resize(flow, 2 * HEIGHT, 2 * WIDTH, is_flow=True).numpy()
  np.testing.assert_allclose(doubled[..., 0], 0.2, atol=1e-6)
  np.testing.assert_allclose(doubled[..., 1], 0.6, atol=1e-6)
  squeezed = video_ops.resize(flow, HEIGHT // 2, 4 * WIDTH, is_flow=True).numpy()
  np.testing.assert_allclose(squeezed[..., 0], 0.4, atol=1e-6)
  np.testing.assert_allclose(squeezed[..., 1], 0.15, atol=1e-6)
  clipped = video_ops.resize(flow, 4 * HEIGHT, 4 * WIDTH, is_flow=True).numpy()
  np.testing.assert_allclose(clipped[..., 1], 1.0)
  rgb = video_ops.resize(flow, 2 * HEIGHT, 2 * WIDTH).numpy()
  np.testing.assert_allclose(rgb[..., 1], 0.3, atol=1e-6)  # an image is resized, not rescaled


def test_resize_short_side_keeps_aspect_ratio():
  frames = tf.zeros([2, HEIGHT, WIDTH, 3])
  assert video_ops.resize_short_side(frames, 96).shape == (2, 96, 128, 3)
  assert video_ops.crop(video_ops.resize_short_side(frames, 36), 2, 12, 32).shape == (2, 32, 32, 3)


@pytest.mark.parametrize('convert_on_accelerator', [True, False])
def test_train_batches_share_indices_crop_and_flip_across_rgb_and_flow(shards, convert_on_accelerator):
  config = small_config(train_pattern=shards['pattern'], stride=2, convert_on_accelerator=convert_on_accelerator)
  dataset = video_input.build_train_dataset(config)
  flips = set()
  for batch, labels in take(dataset, 4):
    dtype = np.uint8 if convert_on_accelerator else np.float32
    assert batch['rgb'].shape == (4, 4, 32, 32, 3) and batch['rgb'].dtype == dtype
    flow_channels = 3 if convert_on_accelerator else 2  # uint8: the stored (x, y, 0), converted to (x, y) later
    assert batch['flow'].shape == (4, 4, 32, 32, flow_channels) and batch['flow'].dtype == dtype
    assert labels.shape == (4,) and labels.dtype == np.int32
    features = converted(batch)
    assert features['rgb'].min() >= -1.0 and features['rgb'].max() <= 1.0
    for rgb_clip, flow_clip, label in zip(features['rgb'], features['flow'], labels):
      example = shards['examples'][label]
      num_video_frames = len(example.feature_lists.feature_list[schema.IMAGE_ENCODED].feature)
      indices = frame_indices_from_flow(flow_clip)
      np.testing.assert_array_equal(np.diff(indices), 2)
      assert indices[-1] < num_video_frames
      offset_y, offset_x, flipped = find_crop(rgb_clip, stored_rgb(example)[indices], 32)
      flips.add(flipped)
      stored = stored_flow(num_video_frames)[indices]
      tolerance = 1e-6 if label < 4 else 5 / 127.5  # PNG flow is exact, JPEG flow within a few levels
      np.testing.assert_allclose(flow_clip, expected_flow_crop(stored, offset_y, offset_x, flipped, 32),
                                 atol=tolerance)
  assert flips == {False, True}


@pytest.mark.parametrize('convert_on_accelerator', [True, False])
def test_train_scale_jitter_rescales_flow(shards, convert_on_accelerator):
  scale = 32 / round(32 * HEIGHT / 60)  # short side 48 -> 60: a 26 px window resized to the 32 px crop
  config = small_config(train_pattern=shards['pattern'], train_resize_range=(60, 60), random_flip=False,
                        convert_on_accelerator=convert_on_accelerator)
  batch, labels = take(video_input.build_train_dataset(config, modalities=('flow',)), 1)[0]
  if convert_on_accelerator:
    np.testing.assert_allclose(batch[training_clips.FLOW_SCALE], scale)
  for flow_clip, label in zip(converted(batch)['flow'], labels):
    if label >= 4:
      continue  # JPEG flow: the exact values are checked on PNG records
    indices = np.rint(flow_clip[:, 0, 0, 1] / scale * BOUND - FIRST_INDEX_FLOW).astype(int)
    np.testing.assert_array_equal(np.diff(indices), 1)
    expected_y = scale * stored_flow(24)[indices, 0, 0, 1]
    np.testing.assert_allclose(flow_clip[..., 1], np.broadcast_to(expected_y[:, None, None], [4, 32, 32]), atol=1e-6)


@pytest.fixture(scope='module')
def real_flow_records(bikes_video):
  """One serialized record each with JPEG and PNG flow: 12 real frames at 90x150 (not whole JPEG blocks) and their
  real (Farneback) flow, which makes JPEG's chroma differ from pixel to pixel as video does."""
  frames = real_clips.read_frames(bikes_video, 12, 150, 90)
  flow = flow_backends.OpenCVFarneback().video_flow(frames)
  def record(flow_format):
    return sequence_example.build_sequence_example(
        media_id='bikes', label_index=0, label_string='bikes', frames=frames,
        timestamps_us=[40000 * t for t in range(12)], frame_rate=25.0, flow=flow,
        encoding=sequence_example.EncodingConfig(flow_format=flow_format)).SerializeToString()

  return {flow_format: record(flow_format) for flow_format in ('jpeg', 'png')}


@pytest.mark.parametrize('flow_format', ['jpeg', 'png'])
def test_decoding_only_the_window_gives_the_clips_of_whole_frames(real_flow_records, flow_format):
  """Decode-and-crop of a window with a margin gives the whole frames' pixels exactly (a flush window differs along
  its border, by up to 19 levels of JPEG flow), so the clips agree with the former design's to float32 rounding
  (3e-5; 1.1e-5 measured on 224-pixel crops of the benchmark's records): what remains is the flip's place (before
  the resize, on uint8, so mirrored interpolation weights) and the flow's sign folded into its scaling.
  Scale jitter from 80 to 105: windows of 55 to 72 pixels resized to the 64-pixel crop, up and down, flow rescaled."""
  config = small_config(num_frames=6, stride=2, crop_size=64, train_resize_range=(80, 105),
                        convert_on_accelerator=False)
  modalities = ('rgb', 'flow')
  upscaled, flipped = set(), set()
  for seed in range(12):
    seed = tf.constant([seed, 7], tf.int64)
    arguments = (real_flow_records[flow_format], 'records', seed, config, modalities, d3d_config.DEFAULT_PIXEL_RANGE)
    features, label = video_input.decode_train_example(*arguments)
    expected, expected_label = input_designs.whole_frame_train_example(*arguments)
    assert int(label) == int(expected_label)
    for name in modalities:
      np.testing.assert_allclose(features[name].numpy(), expected[name].numpy(), atol=3e-5, rtol=0, err_msg=name)
    _, window_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    upscaled.add(int(video_ops.random_scale_jitter_window(90, 150, 64, 80, 105, window_seed)[2]) < 64)
    flipped.add(bool(tf.random.stateless_uniform([], flip_seed) < 0.5))
  assert upscaled == {False, True} and flipped == {False, True}


@pytest.mark.parametrize('flow_format', ['jpeg', 'png'])
def test_uint8_clips_converted_in_the_training_step_are_the_hosts_float_clips(real_flow_records, flow_format):
  """`data.convert_on_accelerator`: the pipeline's uint8 clips, flipped and converted by `training_clips` (what the
  training step does), are its float32 clips to float32 rounding where the window is the crop (no scale jitter), and
  to half a uint8 level where scale jitter resized it (rounded back to levels before the conversion; flow's levels then
  scale with the window)."""
  modalities = ('rgb', 'flow')
  for train_resize_range in ((90, 90), (80, 105)):
    config = small_config(num_frames=6, stride=2, crop_size=64, train_resize_range=train_resize_range)
    half_level, largest_scale = 1 / 255, 64 / round(64 * 90 / 105)  # the smallest window, 55 px
    tolerance = ({'rgb': 1e-6, 'flow': 1e-6} if train_resize_range == (90, 90) else
                 {'rgb': half_level + 1e-6, 'flow': half_level * largest_scale + 1e-6})
    mirrored, largest_difference = set(), {name: 0.0 for name in modalities}
    for seed in range(8):
      arguments = (real_flow_records[flow_format], 'records', tf.constant([seed, 7], tf.int64))
      clip, _ = video_input.decode_train_example(*arguments, config, modalities, d3d_config.DEFAULT_PIXEL_RANGE)
      host, _ = video_input.decode_train_example(*arguments, dataclasses.replace(config, convert_on_accelerator=False),
                                                 modalities, d3d_config.DEFAULT_PIXEL_RANGE)
      assert clip['rgb'].dtype == tf.uint8 and clip['flow'].dtype == tf.uint8
      mirrored.add(bool(clip[training_clips.MIRRORED]))
      features = converted({name: value.numpy()[np.newaxis] for name, value in clip.items()})
      for name in modalities:
        difference = np.abs(features[name][0] - host[name].numpy()).max()
        assert difference <= tolerance[name], (train_resize_range, name, difference)
        largest_difference[name] = max(largest_difference[name], difference)
    assert mirrored == {False, True}
    if train_resize_range != (90, 90):  # the rounding shows: the tolerance is not loose by orders of magnitude
      assert largest_difference['rgb'] > half_level / 2 and largest_difference['flow'] > half_level / 2


def test_decode_window_with_margin_is_exact_where_a_flush_window_is_not(real_flow_records):
  """Why `video_ops.DECODE_MARGIN` exists: libjpeg decodes the border of a flush window differently."""
  example = tf.train.SequenceExample.FromString(real_flow_records['jpeg'])
  stored = example.feature_lists.feature_list[schema.FLOW_ENCODED].feature
  encoded = tf.constant([f.bytes_list.value[0] for f in stored])
  whole = video_ops.decode_frames(encoded).numpy().astype(int)
  flush_differences = 0
  for offset_y, offset_x, size in ((0, 0, 64), (13, 37, 64), (26, 86, 64), (5, 21, 70), (1, 1, 88)):
    expected = whole[:, offset_y:offset_y + size, offset_x:offset_x + size]
    window = video_ops.decode_window(encoded, (offset_y, offset_x, size), (90, 150)).numpy()
    np.testing.assert_array_equal(window, expected)
    flush = tf.stack([tf.io.decode_and_crop_jpeg(image, [offset_y, offset_x, size, size]) for image in encoded])
    flush_differences += int(np.count_nonzero(flush.numpy() != expected))
  assert flush_differences > 0


def test_train_example_without_frame_size_is_a_record_error(tmp_path, bikes_frames):
  example = make_example(bikes_frames[:6], 1)
  del example.context.feature[schema.IMAGE_HEIGHT]
  config = small_config(train_pattern=write_shard(tmp_path / 'no_size.tfrecord', [example]))
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    take(video_input.build_train_dataset(config), 1)
  assert 'image/height and image/width' in str(video_input.record_error(raised.value))


def test_short_video_clip_loops(tmp_path, bikes_frames):
  path = write_shard(tmp_path / 'short.tfrecord', [make_example(bikes_frames[:5], 7)])
  example = make_example(bikes_frames[:5], 7)
  config = small_config(train_pattern=path, num_frames=8, global_batch_size=2)
  batch, labels = take(video_input.build_train_dataset(config), 1)[0]
  np.testing.assert_array_equal(labels, [7, 7])
  features = converted(batch)
  for rgb_clip, flow_clip in zip(features['rgb'], features['flow']):
    np.testing.assert_array_equal(frame_indices_from_flow(flow_clip), [0, 1, 2, 3, 4, 0, 1, 2])
    find_crop(rgb_clip, stored_rgb(example)[[0, 1, 2, 3, 4, 0, 1, 2]], 32)


def test_rgb_only_never_parses_or_decodes_flow(tmp_path, bikes_frames):
  broken_flow = make_example(bikes_frames[:6], 2)
  for feature in broken_flow.feature_lists.feature_list[schema.FLOW_ENCODED].feature:
    feature.bytes_list.value[0] = b'not an image'
  without_flow_path = write_shard(tmp_path / 'without_flow.tfrecord', [make_example(bikes_frames[:6], 1, False)])
  broken_flow_path = write_shard(tmp_path / 'broken_flow.tfrecord', [broken_flow])
  both = f'{without_flow_path},{broken_flow_path}'
  config = small_config(train_pattern=both, eval_pattern=both, global_batch_size=2)
  batches = take(video_input.build_train_dataset(config, modalities=('rgb',)), 4)
  assert all(set(features) == {'rgb', training_clips.MIRRORED} for features, _ in batches)  # no flow scale
  assert set(np.concatenate([labels for _, labels in batches])) == {1, 2}  # both records read, shuffled
  features, labels = take(video_input.build_eval_dataset(config), 1)[0]
  assert set(features) == {'rgb'} and features['rgb'].shape == (2, 1, 4, 32, 32, 3)
  for path in (without_flow_path, broken_flow_path):  # the same records fail as soon as flow is asked for
    with pytest.raises(tf.errors.InvalidArgumentError):
      take(video_input.build_eval_dataset(small_config(eval_pattern=path), modalities=('rgb', 'flow')), 1)


def test_flow_only_mode(shards):
  config = small_config(train_pattern=shards['pattern'])
  features, _ = take(video_input.build_train_dataset(config, modalities=('flow',)), 1)[0]
  assert set(features) == {'flow', *training_clips.PARAMETERS} and features['flow'].shape == (4, 4, 32, 32, 3)
  features, _ = take(video_input.build_train_dataset(dataclasses.replace(config, convert_on_accelerator=False),
                                                     modalities=('flow',)), 1)[0]
  assert set(features) == {'flow'} and features['flow'].shape == (4, 4, 32, 32, 2)


def test_eval_views_are_clips_times_crops_in_order(shards):
  config = small_config(eval_pattern=shards['pattern'], num_frames=4, stride=2, num_eval_clips=3, num_eval_crops=3)
  batches = take(video_input.build_eval_dataset(config, modalities=('rgb', 'flow')), 10)
  assert [len(labels) for _, labels in batches] == [2, 2, 2]
  labels = np.concatenate([labels for _, labels in batches])
  np.testing.assert_array_equal(labels, np.arange(6))  # every shard, in file order
  features = {name: np.concatenate([f[name] for f, _ in batches]) for name in ('rgb', 'flow')}
  assert features['rgb'].shape == (6, 9, 4, 32, 32, 3) and features['flow'].shape == (6, 9, 4, 32, 32, 2)
  for label in range(4):  # PNG flow records; 20 or 24 frames, clip span 7
    example = shards['examples'][label]
    num_video_frames = 20 + 4 * (label % 2)
    expected_starts = np.rint(np.linspace(0, num_video_frames - 7, 3))
    rgb = stored_rgb(example)
    flow = stored_flow(num_video_frames)
    for view in range(9):
      clip, crop = divmod(view, 3)
      indices = frame_indices_from_flow(features['flow'][label, view])
      np.testing.assert_array_equal(indices, expected_starts[clip] + 2 * np.arange(4))
      offset_x = 16 * crop  # crops spread along the long (horizontal) side: 0, 16, 32; centred vertically at 8
      np.testing.assert_allclose(features['rgb'][label, view], rgb[indices, 8:40, offset_x:offset_x + 32], atol=1e-5)
      np.testing.assert_allclose(features['flow'][label, view], flow[indices, 8:40, offset_x:offset_x + 32],
                                 atol=1e-6)


def test_eval_single_view_is_centre_clip_and_centre_crop(shards):
  config = small_config(eval_pattern=shards['paths'][0], eval_resize=HEIGHT, num_frames=4)
  features, labels = take(video_input.build_eval_dataset(config, modalities=('flow',)), 1)[0]
  np.testing.assert_array_equal(labels, [0, 1])
  np.testing.assert_array_equal(frame_indices_from_flow(features['flow'][0, 0]), 8 + np.arange(4))  # (20-4)//2
  np.testing.assert_array_equal(frame_indices_from_flow(features['flow'][1, 0]), 10 + np.arange(4))  # (24-4)//2
  np.testing.assert_allclose(features['flow'][0, 0], stored_flow(20)[8:12, 8:40, 16:48], atol=1e-6)


def test_eval_views_of_decoded_frames_are_those_of_their_encoded_frames(shards):
  """The one evaluation view takes a record's JPEGs (the pipeline) or the same frames decoded (`serving_default`)."""
  config = small_config(num_frames=4, stride=2, num_eval_clips=2, num_eval_crops=3, eval_resize=40)
  example = shards['examples'][1]
  stored = example.feature_lists.feature_list[schema.IMAGE_ENCODED].feature
  encoded = tf.constant([f.bytes_list.value[0] for f in stored])
  decoded = tf.stack([tf.io.decode_jpeg(jpeg) for jpeg in encoded])
  indices = video_input.eval_clip_indices(len(encoded), config)
  np.testing.assert_array_equal(indices, [[0, 2, 4, 6], [17, 19, 21, 23]])
  rgb = network_inputs.MODALITIES['rgb']
  from_encoded = video_input.eval_views(encoded, indices, config, rgb, d3d_config.DEFAULT_PIXEL_RANGE).numpy()
  from_decoded = video_input.eval_views(decoded, indices, config, rgb, d3d_config.DEFAULT_PIXEL_RANGE).numpy()
  assert from_encoded.shape == (6, 4, 32, 32, 3)
  np.testing.assert_array_equal(from_encoded, from_decoded)


def test_eval_decodes_each_frame_once_when_clips_overlap(shards, monkeypatch):
  """Five clips of 4 frames at stride 2 in a 20-frame video overlap: 16 distinct frames of 20 sampled are decoded."""
  config = small_config(num_frames=4, stride=2, num_eval_clips=5, num_eval_crops=2, eval_resize=40)
  example = shards['examples'][0]
  encoded = tf.constant([f.bytes_list.value[0] for f in
                         example.feature_lists.feature_list[schema.IMAGE_ENCODED].feature])
  indices = video_input.eval_clip_indices(len(encoded), config)
  assert len(np.unique(indices)) < indices.numpy().size
  decoded = []
  decode_frames = video_ops.decode_frames
  monkeypatch.setattr(video_ops, 'decode_frames',
                      lambda frames, channels=3: decoded.append(int(frames.shape[0])) or decode_frames(frames))
  views = video_input.eval_views(encoded, indices, config, network_inputs.MODALITIES['rgb'],
                                 d3d_config.DEFAULT_PIXEL_RANGE).numpy()
  assert decoded == [len(np.unique(indices))]
  rgb = stored_rgb(example)
  resized = video_ops.resize_short_side(rgb, 40).numpy()
  for view in range(10):
    clip, crop = divmod(view, 2)
    offset_x = (0, resized.shape[2] - 32)[crop]
    np.testing.assert_allclose(views[view], resized[indices[clip], 4:36, offset_x:offset_x + 32], atol=1e-5)


def test_rgb_is_scaled_to_the_networks_pixel_range_and_flow_is_not(shards):
  config = small_config(eval_pattern=shards['paths'][0], eval_resize=HEIGHT, num_frames=4)
  default, _ = take(video_input.build_eval_dataset(config, modalities=('rgb', 'flow')), 1)[0]
  unit, _ = take(video_input.build_eval_dataset(config, ('rgb', 'flow'), pixel_range='zero_to_one'), 1)[0]
  np.testing.assert_allclose(unit['rgb'], (default['rgb'] + 1.0) / 2.0, atol=1e-6)  # x / 255 against x / 127.5 - 1
  assert unit['rgb'].min() >= 0.0 and default['rgb'].min() < 0.0
  np.testing.assert_array_equal(unit['flow'], default['flow'])


def test_input_context_reads_this_pipelines_shards_at_the_per_replica_batch(shards):
  config = small_config(train_pattern=shards['pattern'], global_batch_size=4)
  context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=1, num_replicas_in_sync=2)
  features, labels = take(video_input.build_train_dataset(config, modalities=('rgb',), input_context=context), 1)[0]
  assert features['rgb'].shape[0] == 2
  assert set(labels) <= {2, 3}  # shard 1 holds labels 2 and 3


def test_all_shards_are_read_in_training(shards):
  config = small_config(train_pattern=shards['pattern'], num_frames=2, crop_size=16,
                        train_resize_range=(24, 24), global_batch_size=6)
  labels = np.concatenate([labels for _, labels in take(video_input.build_train_dataset(config), 6)])
  assert set(labels) == set(range(6))


def test_deterministic_input_repeats_the_same_clips_in_the_same_order(shards):
  config = small_config(train_pattern=shards['pattern'], num_frames=2, crop_size=16, train_resize_range=(24, 32),
                        global_batch_size=2, deterministic=True)
  first, second = (take(video_input.build_train_dataset(config, modalities=('rgb',)), 6) for _ in range(2))
  for (features_a, labels_a), (features_b, labels_b) in zip(first, second):
    np.testing.assert_array_equal(labels_a, labels_b)
    np.testing.assert_array_equal(features_a['rgb'], features_b['rgb'])
  other_seed = take(video_input.build_train_dataset(dataclasses.replace(config, seed=4), modalities=('rgb',)), 6)
  assert any(not np.array_equal(a[1], b[1]) or not np.array_equal(a[0]['rgb'], b[0]['rgb'])
             for a, b in zip(first, other_seed))


def test_bad_settings_name_the_problem(shards):
  with pytest.raises(ValueError, match='train_pattern'):
    video_input.build_train_dataset(small_config(train_pattern=shards['pattern'] + '.missing'))
  with pytest.raises(d3d_config.ConfigError, match=r'data.train_resize_range=\(48, 48\) resizes frames to a short '
                     'side of 48, smaller than data.crop_size=64'):
    video_input.build_train_dataset(small_config(train_pattern=shards['pattern'], crop_size=64))
  with pytest.raises(d3d_config.ConfigError, match=r'must be \(min, max\)'):
    video_input.build_train_dataset(small_config(train_pattern=shards['pattern'], train_resize_range=(40, 36)))
  with pytest.raises(d3d_config.ConfigError, match='data.eval_resize=30 resizes frames to a short side of 30'):
    video_input.build_eval_dataset(small_config(eval_pattern=shards['pattern'], eval_resize=30))
  video_input.build_eval_dataset(small_config(eval_pattern=shards['pattern'], train_resize_range=(8, 8)))
  with pytest.raises(ValueError, match='modalities'):
    video_input.build_eval_dataset(small_config(eval_pattern=shards['pattern']), modalities=('depth',))
  context = tf.distribute.InputContext(num_input_pipelines=4, input_pipeline_id=0, num_replicas_in_sync=4)
  with pytest.raises(ValueError, match='fewer than the 4 input pipelines'):
    video_input.build_train_dataset(small_config(train_pattern=shards['pattern']), input_context=context)
