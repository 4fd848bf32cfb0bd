"""The motion probe on records of a real image moving by known translations: readouts find the motion where the
network's features hold it, and not where they cannot."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import tensorflow as tf

import training_records
from d3d_core import label_map
from official_d3d import motion_probe
from official_d3d.configs import d3d_config
from official_d3d.modeling import factory
from tfrecord_tools import sequence_example

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, NUM_FRAMES, SPEED = 40, 8, 2  # frames of 40 x 40 pixels, moving 2 px per frame
DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def translating_video(image: np.ndarray, start, direction):
  """Frames of a `SIZE` window sliding over `image` by `SPEED` px per frame along `direction`, and their flow (the
  content moves against the window)."""
  (y, x), (dx, dy) = start, direction
  frames = np.stack([image[y + t * SPEED * dy:y + t * SPEED * dy + SIZE, x + t * SPEED * dx:x + t * SPEED * dx + SIZE]
                     for t in range(NUM_FRAMES)])
  flow = np.broadcast_to(np.array([-dx * SPEED, -dy * SPEED], np.float32), (NUM_FRAMES, SIZE, SIZE, 2))
  return frames, flow


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  """Train (12 videos) and test (16) records of windows of the astronaut photograph, one direction per video."""
  root = tmp_path_factory.mktemp('translations')
  image = skimage.data.astronaut()
  rng = np.random.default_rng(0)
  patterns = {}
  for split, num_videos in (('train', 12), ('test', 16)):
    path = str(root / f'{split}-00000-of-00001.tfrecord')
    with tf.io.TFRecordWriter(path) as writer:
      for index in range(num_videos):
        start = rng.integers(40, 400, size=2)
        frames, flow = translating_video(image, start, DIRECTIONS[index % 4])
        writer.write(sequence_example.build_sequence_example(
            media_id=f'{split}_{index}', label_index=index % 4, label_string=str(index % 4), frames=frames,
            timestamps_us=[40_000 * t for t in range(NUM_FRAMES)], frame_rate=25.0, flow=flow).SerializeToString())
    patterns[split] = path
  label_map.write_label_map([str(i) for i in range(4)], str(root / label_map.FILENAME))
  return patterns


def untrained_run(root, records, stream: str) -> str:
  """A model_dir holding an untrained tiny network of `stream` (random weights), set to read `records`."""
  config = d3d_config.ExperimentConfig(
      stream=stream, model_dir=str(root / stream),
      data=d3d_config.DataConfig(train_pattern=records['train'], eval_pattern=records['test'], num_classes=4,
                                 num_frames=NUM_FRAMES, crop_size=32, eval_resize=SIZE),
      model=d3d_config.ModelConfig(depth_multiplier=0.1, min_depth=8, pixel_range='minus_one_to_one'))
  network = factory.build_network(config, factory.stream_modality(stream))
  d3d_config.save(config, config.model_dir)
  tf.train.CheckpointManager(tf.train.Checkpoint(network=factory.network_checkpoint(network)), config.model_dir,
                             max_to_keep=1).save(checkpoint_number=1)
  return config.model_dir


@pytest.fixture(scope='module')
def results(tmp_path_factory, records):
  root = tmp_path_factory.mktemp('probe')
  networks = (untrained_run(root, records, 'flow'), untrained_run(root, records, 'rgb'))
  config = motion_probe.ProbeConfig(networks=networks, endpoints=('Conv2d_1a_7x7', 'Mixed_5c'),
                                    output_dir=str(root / 'probe'))
  return motion_probe.run(config), config.output_dir


def test_features_of_the_flow_itself_predict_it_far_better_than_zero_flow(results):
  results, _ = results
  # |flow| = 2 px, stored in steps of 20/127.5 px in JPEG images.
  assert results['trivial']['zero_flow'] == pytest.approx(SPEED, rel=0.1)
  assert results['networks']['flow']['epe']['Conv2d_1a_7x7'] < 0.5 * results['trivial']['zero_flow']


def test_random_rgb_features_predict_little_more_than_the_mean_flow(results):
  results, _ = results
  mean_flow = results['trivial']['mean_flow']
  assert mean_flow == pytest.approx(SPEED, rel=0.1)  # the four directions cancel
  for endpoint in ('Conv2d_1a_7x7', 'Mixed_5c'):
    assert results['networks']['rgb']['epe'][endpoint] > 0.75 * mean_flow


def test_the_paired_difference_says_how_far_a_gap_stands_out_of_the_test_videos_noise(results):
  results, _ = results
  per_video = results['networks']['flow']['epe_per_video']['Conv2d_1a_7x7']
  assert len(per_video) == 16
  assert np.mean(per_video) == pytest.approx(results['networks']['flow']['epe']['Conv2d_1a_7x7'], abs=1e-4)
  gap = motion_probe.paired_difference(results, 'flow', 'rgb')['Conv2d_1a_7x7']
  assert gap['mean'] == pytest.approx(results['networks']['flow']['epe']['Conv2d_1a_7x7']
                                      - results['networks']['rgb']['epe']['Conv2d_1a_7x7'], abs=1e-4)
  assert gap['mean'] < -5 * gap['stderr'] < 0  # the flow network's features hold the motion on every video
  assert motion_probe.paired_difference(results, 'rgb', 'rgb')['Mixed_5c'] == {'mean': 0.0, 'stderr': 0.0}


def test_results_and_plot_are_written(results):
  results, output_dir = results
  written = json.loads(open(os.path.join(output_dir, motion_probe.RESULTS_FILENAME)).read())
  assert written['networks'] == results['networks'] and written['num_clips'] == 16 * 2
  with open(os.path.join(output_dir, motion_probe.PLOT_FILENAME), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  table = motion_probe.summary(results)
  assert 'Conv2d_1a_7x7' in table and 'zero flow' in table


def test_the_least_squares_readout_recovers_a_linear_map_of_the_features_exactly():
  rng = np.random.default_rng(1)
  features = rng.normal(size=(6, 2, 3, 3, 5))
  weights = rng.normal(size=(6, 2))
  readout = motion_probe.LinearReadout(features.shape[1:4], (4, 12, 12))
  flow = readout.predict(features, weights)
  readout.accumulate(features, flow)
  np.testing.assert_allclose(readout.solve(1e-9), weights, atol=1e-5)
  # The upsampling is TensorFlow's bilinear resize.
  expected = tf.image.resize(tf.constant(features[0, 0, :, :, :2]), (12, 12)).numpy()
  constant_in_time = readout.predict(np.repeat(features[:1, :1], 2, axis=1), np.eye(6)[:, :2])
  np.testing.assert_allclose(constant_in_time[0, 0], expected, atol=1e-5)


def probe_command(*args):
  return subprocess.run([sys.executable, '-m', 'official_d3d.probe_motion', *args], cwd=REPO, capture_output=True,
                        text=True, check=False, timeout=300)


def one_error_line(process, *fragments):
  assert process.returncode == 1, process.stderr[-3000:]
  assert 'Traceback' not in process.stderr, process.stderr[-3000:]
  [error] = [line for line in process.stderr.splitlines() if line.startswith('error: ')]
  for fragment in fragments:
    assert fragment in error, error
  return error


@pytest.mark.slow
def test_bad_input_is_one_error_line(tmp_path, records, bikes_video):
  run = untrained_run(tmp_path, records, 'rgb')
  one_error_line(probe_command(f'--networks={run}', '--endpoints=Mixed_3c,Mixed_9z', f'--output_dir={tmp_path}'),
                 'unknown endpoint Mixed_9z', 'Mixed_5c')
  rgb_only = training_records.write_records(tmp_path / 'rgb_only', bikes_video, with_flow=False)
  one_error_line(probe_command(f'--networks={run}', f'--records={rgb_only["train"]}', f'--output_dir={tmp_path}'),
                 'train-0000', 'no flow frames')
  assert not os.path.exists(tmp_path / motion_probe.RESULTS_FILENAME)
  with pytest.raises(d3d_config.ConfigError, match='16 videos: cross-fitting over 10 folds needs at least 20'):
    motion_probe.run(motion_probe.ProbeConfig(networks=(run,), num_folds=10))


def test_folds_mix_the_videos_whatever_their_order():
  folds = motion_probe.video_folds(16, 4)
  assert sorted(np.bincount(folds)) == [4] * 4  # as even as the count allows
  assert not all((folds[i::4] == folds[i]).all() for i in range(4))  # not dealt by position: records cycle classes
  np.testing.assert_array_equal(folds, motion_probe.video_folds(16, 4))  # the same on every run
