"""The motion benchmark: real video files that decode, a deterministic generator, labels carried by motion only."""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tfrecord_tools import make_motion_dataset

# Small but with enough videos per class for the statistics below to mean something.
CONFIG = make_motion_dataset.MotionDatasetConfig(seed=3, videos_per_class_train=12, videos_per_class_test=1,
                                                 num_frames=12, width=80, height=60)
NUM_CLASSES = len(make_motion_dataset.CLASS_NAMES)


def read_manifest(path):
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['path', 'label']
  return rows[1:]


def read_video(path):
  """All frames of a video file, RGB uint8 [T, H, W, 3]."""
  capture = cv2.VideoCapture(str(path))
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  capture.release()
  return np.stack(frames)


@pytest.fixture(scope='module')
def dataset_dir(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('motion')
  make_motion_dataset.generate_dataset(CONFIG, str(output_dir))
  return output_dir


@pytest.fixture(scope='module')
def train_videos(dataset_dir):
  """[(frames, label)] for the train split, decoded from the files."""
  return [(read_video(dataset_dir / path), label) for path, label in read_manifest(dataset_dir / 'train.csv')]


def test_manifests_list_every_video_with_its_class(dataset_dir):
  for split, per_class in (('train', CONFIG.videos_per_class_train), ('test', CONFIG.videos_per_class_test)):
    rows = read_manifest(dataset_dir / f'{split}.csv')
    assert len(rows) == per_class * NUM_CLASSES
    labels = [label for _, label in rows]
    assert sorted(set(labels)) == sorted(make_motion_dataset.CLASS_NAMES)
    assert all(labels.count(name) == per_class for name in make_motion_dataset.CLASS_NAMES)
    for path, _ in rows:
      assert not os.path.isabs(path) and (dataset_dir / path).is_file()
  saved = json.loads((dataset_dir / make_motion_dataset.CONFIG_FILENAME).read_text())
  assert saved['class_names'] == list(make_motion_dataset.CLASS_NAMES)
  assert saved['config']['seed'] == CONFIG.seed


@pytest.mark.parametrize('codec', sorted(make_motion_dataset.CODEC_EXTENSIONS))
def test_videos_decode_with_the_configured_length_and_size(dataset_dir, tmp_path, codec):
  if codec == CONFIG.codec:
    path = dataset_dir / read_manifest(dataset_dir / 'test.csv')[0][0]
  else:
    config = dataclasses.replace(CONFIG, videos_per_class_train=1, videos_per_class_test=0, codec=codec)
    make_motion_dataset.generate_dataset(config, str(tmp_path))
    path = tmp_path / read_manifest(tmp_path / 'train.csv')[0][0]
  assert path.suffix == make_motion_dataset.CODEC_EXTENSIONS[codec]
  capture = cv2.VideoCapture(str(path))
  assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(CONFIG.frame_rate)
  capture.release()
  frames = read_video(path)
  assert frames.shape == (CONFIG.num_frames, CONFIG.height, CONFIG.width, 3)
  # Real content, not a blank or frozen video.
  assert frames.std() > 10
  assert np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() > 1


def test_compression_stays_close_to_the_rendered_frames(tmp_path):
  config = dataclasses.replace(CONFIG, seed=11)
  short_side = min(config.width, config.height)
  objects = make_motion_dataset.load_textures(round(config.object_texture_scale * short_side))
  backgrounds = make_motion_dataset.load_textures(round(config.background_texture_scale * short_side))
  rendered = make_motion_dataset.render_video('zoom_in', config, backgrounds, objects, np.random.default_rng(0))
  path = str(tmp_path / 'clip.mp4')
  make_motion_dataset.write_video(rendered, path, config.frame_rate, config.codec)
  decoded = read_video(path)
  error = np.abs(decoded.astype(np.float32) - rendered).mean()
  assert 0 < error < 12  # lossy, yet the same picture


def test_same_seed_gives_the_same_dataset_and_another_seed_does_not(dataset_dir, tmp_path):
  again, other = tmp_path / 'again', tmp_path / 'other'
  make_motion_dataset.generate_dataset(CONFIG, str(again))
  make_motion_dataset.generate_dataset(dataclasses.replace(CONFIG, seed=CONFIG.seed + 1, videos_per_class_train=1),
                                       str(other))
  for split in make_motion_dataset.SPLITS:
    assert (again / f'{split}.csv').read_bytes() == (dataset_dir / f'{split}.csv').read_bytes()
    for path, _ in read_manifest(dataset_dir / f'{split}.csv'):
      np.testing.assert_array_equal(read_video(again / path), read_video(dataset_dir / path))
  for path, _ in read_manifest(other / 'train.csv'):
    assert np.abs(read_video(other / path).astype(np.int16) - read_video(dataset_dir / path)).mean() > 5


def test_a_video_does_not_depend_on_how_many_are_made(dataset_dir, tmp_path):
  make_motion_dataset.generate_dataset(dataclasses.replace(CONFIG, videos_per_class_train=1), str(tmp_path))
  for path, _ in read_manifest(tmp_path / 'train.csv'):
    np.testing.assert_array_equal(read_video(tmp_path / path), read_video(dataset_dir / path))


def _between_class_scatter(features, labels):
  mean = features.mean(axis=0)
  return sum((labels == c).sum() * np.sum((features[labels == c].mean(axis=0) - mean)**2) for c in np.unique(labels))


def _permutation_p_value(features, labels, permutations=500):
  """How often shuffled labels separate the features at least as well as the true labels do."""
  rng = np.random.default_rng(0)
  observed = _between_class_scatter(features, labels)
  null = [_between_class_scatter(features, rng.permutation(labels)) for _ in range(permutations)]
  return (1 + sum(value >= observed for value in null)) / (1 + permutations)


def _mean_frame(frames):
  return cv2.resize(frames.mean(axis=0, dtype=np.float32), (8, 6), interpolation=cv2.INTER_AREA).ravel()


def _colour_histogram(frames):
  return np.concatenate([np.bincount(frames[..., c].ravel() // 32, minlength=8) / frames[..., c].size
                         for c in range(3)])


def _flow_summary(frames):
  """Where the object moves and how: a location map and motion moments, means over the frame pairs.

  Farneback flow minus its median (the background drift) leaves the object's motion. The location map is the share
  of that motion in each column and row of a coarse grid. The moments are translation (x, y), curl and divergence
  about the object's centre, the flow-weighted circular mean of the pixel positions (the object wraps around the
  frame's edges). Curl > 0 is clockwise on screen (y points down); divergence > 0 is growth.
  """
  height, width = frames.shape[1:3]
  grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
  gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
  locations, moments = [], []
  for first, second in zip(gray[:-1], gray[1:]):
    flow = cv2.calcOpticalFlowFarneback(first, second, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    residual = flow - np.median(flow.reshape(-1, 2), axis=0)
    weight = np.hypot(residual[..., 0], residual[..., 1])
    cells = cv2.resize(weight / weight.sum(), (8, 6), interpolation=cv2.INTER_AREA)
    locations.append(np.concatenate([cells.sum(axis=0), cells.sum(axis=1)]))
    centre_x = np.angle(np.sum(weight * np.exp(2j * math.pi * grid_x / width))) / (2 * math.pi) * width
    centre_y = np.angle(np.sum(weight * np.exp(2j * math.pi * grid_y / height))) / (2 * math.pi) * height
    dx = (grid_x - centre_x + width / 2) % width - width / 2
    dy = (grid_y - centre_y + height / 2) % height - height / 2
    moments.append([residual[..., 0].mean(), residual[..., 1].mean(),
                    np.mean(dx * residual[..., 1] - dy * residual[..., 0]),
                    np.mean(dx * residual[..., 0] + dy * residual[..., 1])])
  return np.mean(locations, axis=0), np.mean(moments, axis=0)


@pytest.fixture(scope='module')
def flow_summaries(train_videos):
  """(labels, location maps, motion moments) of the train split."""
  locations, moments = zip(*(_flow_summary(frames) for frames, _ in train_videos))
  return np.array([label for _, label in train_videos]), np.stack(locations), np.stack(moments)


def test_a_frame_tells_nothing_about_the_label(train_videos, flow_summaries):
  labels, locations, _ = flow_summaries
  mean_frames = np.stack([_mean_frame(frames) for frames, _ in train_videos])
  histograms = np.stack([_colour_histogram(frames) for frames, _ in train_videos])
  # Per-class mean frames, colour histograms and places where the object is differ no more than under shuffled
  # labels.
  assert _permutation_p_value(mean_frames, labels) > 0.01
  assert _permutation_p_value(histograms, labels) > 0.01
  assert _permutation_p_value(locations, labels) > 0.01


def test_the_motion_tells_the_label(flow_summaries):
  labels, _, moments = flow_summaries
  assert _permutation_p_value(moments, labels) < 0.01

  expected_direction = {'translate_left': (-1, 0), 'translate_right': (1, 0), 'translate_up': (0, -1),
                        'translate_down': (0, 1)}
  correct = []
  for (translation_x, translation_y, curl, divergence), label in zip(moments, labels):
    if label in expected_direction:
      correct.append(np.dot((translation_x, translation_y), expected_direction[label]) >
                     math.cos(math.pi / 4) * math.hypot(translation_x, translation_y))
    elif label.startswith('rotate'):
      correct.append(np.sign(curl) == (1 if label == 'rotate_clockwise' else -1))
    else:
      correct.append(np.sign(divergence) == (1 if label == 'zoom_in' else -1))
  # Per class; chance would be 1/4 for translations and 1/2 for rotations and zooms.
  accuracy = {name: np.mean(np.array(correct)[labels == name]) for name in make_motion_dataset.CLASS_NAMES}
  assert min(accuracy.values()) >= 0.75, accuracy


def test_translation_classes_move_the_object_in_eight_directions(tmp_path):
  config = dataclasses.replace(CONFIG, classes=make_motion_dataset.TRANSLATION_CLASSES, videos_per_class_train=4,
                               videos_per_class_test=0, width=48, height=48, translation_speed=(0.05, 0.08),
                               translation_jitter_degrees=10.0)
  make_motion_dataset.generate_dataset(config, str(tmp_path))
  rows = read_manifest(tmp_path / 'train.csv')
  assert sorted({label for _, label in rows}) == sorted(make_motion_dataset.TRANSLATION_CLASSES)
  assert len(make_motion_dataset.TRANSLATION_CLASSES) == 8
  directions = np.array([make_motion_dataset.MOTIONS[name][0] for name in make_motion_dataset.TRANSLATION_CLASSES])
  labels, nearest = [], []
  for path, label in rows:
    translation = _flow_summary(read_video(tmp_path / path))[1][:2]
    labels.append(label)
    nearest.append(make_motion_dataset.TRANSLATION_CLASSES[int(np.argmax(directions @ translation))])
  correct = np.array(labels) == np.array(nearest)
  # The measured flow points to the class's direction (of eight, 45 degrees apart): chance would be 1/8.
  assert correct.mean() >= 0.75, list(zip(labels, nearest))
  assert all(correct[np.array(labels) == name].mean() >= 0.5 for name in make_motion_dataset.TRANSLATION_CLASSES)


def test_command_line_quick_preset_with_overrides(tmp_path):
  output_dir = tmp_path / 'quick'
  subprocess.run([sys.executable, '-m', 'tfrecord_tools.make_motion_dataset', f'--output_dir={output_dir}', '--quick',
                  '--videos_per_class_test=2', '--size=48x32'], check=True, capture_output=True,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  quick = make_motion_dataset.QUICK_CONFIG
  assert len(read_manifest(output_dir / 'train.csv')) == quick.videos_per_class_train * NUM_CLASSES
  assert len(read_manifest(output_dir / 'test.csv')) == 2 * NUM_CLASSES
  frames = read_video(output_dir / read_manifest(output_dir / 'test.csv')[0][0])
  assert frames.shape == (quick.num_frames, 32, 48, 3)


def test_long_clips_shrink_the_object_so_that_zooming_keeps_it_in_the_frame():
  config = dataclasses.replace(CONFIG, num_frames=32)
  smallest, largest = config.object_radius_range()
  assert largest < CONFIG.object_radius_range()[1] == CONFIG.object_radius[1]
  assert 2 * largest * math.exp(config.zoom_log_rate_per_frame[1] * (config.num_frames - 1) / 2) < 1
  assert smallest / largest == pytest.approx(CONFIG.object_radius[0] / CONFIG.object_radius[1])


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match='codec'):
    make_motion_dataset.MotionDatasetConfig(codec='H264')
  with pytest.raises(ValueError, match='num_frames'):
    make_motion_dataset.MotionDatasetConfig(num_frames=1)
  with pytest.raises(ValueError, match='classes'):
    make_motion_dataset.MotionDatasetConfig(classes=('translate_left', 'jump'))
  with pytest.raises(ValueError, match='classes'):
    make_motion_dataset.MotionDatasetConfig(classes=('zoom_in', 'zoom_in'))
  with pytest.raises(ValueError, match='unknown class'):
    make_motion_dataset.render_video('jump', CONFIG, [], [], np.random.default_rng(0))
