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


# Complementary classes: the kind (colour) is in every frame and not in luminance flow, the motion the other way round.
# The demo's classes, frame size and speed (0.5-0.9 px a frame).
MOTION_PAIR = ('translate_left', 'translate_right')
COMPLEMENTARY_CONFIG = dataclasses.replace(
    CONFIG, classes=make_motion_dataset.complementary_classes(make_motion_dataset.KINDS, MOTION_PAIR),
    videos_per_class_train=8, videos_per_class_test=8, num_frames=12, width=40, height=40,
    translation_speed=(0.012, 0.022))


@pytest.fixture(scope='module')
def complementary_videos(tmp_path_factory):
  """{split: (decoded videos, kinds, motions)} of a 4 kinds x 2 translations dataset written to disk."""
  output_dir = tmp_path_factory.mktemp('complementary')
  make_motion_dataset.generate_dataset(COMPLEMENTARY_CONFIG, str(output_dir))
  splits = {}
  for split in make_motion_dataset.SPLITS:
    rows = read_manifest(output_dir / f'{split}.csv')
    kinds, motions = zip(*(make_motion_dataset.parse_class(label) for _, label in rows))
    splits[split] = ([read_video(output_dir / path) for path, _ in rows], np.array(kinds), np.array(motions))
  return splits


def _held_out_accuracy(train_features, train_labels, test_features, test_labels, ridge=10.0):
  """A linear readout: ridge regression onto one-hot labels (features standardised on the train split), argmax."""
  mean, std = train_features.mean(axis=0), train_features.std(axis=0) + 1e-6
  design = lambda features: np.c_[(features - mean) / std, np.ones(len(features))]
  classes = np.unique(train_labels)
  targets = (train_labels[:, None] == classes[None, :]).astype(np.float64)
  train_design = design(train_features)
  weights = np.linalg.solve(train_design.T @ train_design + ridge * np.eye(train_design.shape[1]),
                            train_design.T @ targets)
  return float(np.mean(classes[np.argmax(design(test_features) @ weights, axis=1)] == test_labels))


def _chroma(frame):
  """BT.601 (Cb, Cr) of each pixel of an RGB frame: the part of the colour that RGB2GRAY, and so flow, ignores."""
  rgb = frame.astype(np.float32)
  luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
  return (rgb[..., 2] - luma) / 1.772, (rgb[..., 0] - luma) / 1.402


def _chroma_histogram(frame, bins=8, extent=48.0):
  """Share of a frame's pixels in each cell of a (Cb, Cr) grid: the frame's colour statistics."""
  cb, cr = _chroma(frame)
  histogram, _, _ = np.histogram2d(cb.ravel(), cr.ravel(), bins=bins, range=[[-extent, extent], [-extent, extent]])
  return histogram.ravel() / cb.size


def _coarse_frame(frame):
  """The frame shrunk to 8x8 RGB pixels: a coarse picture of where things are."""
  return cv2.resize(frame.astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA).ravel()


def _readout_accuracies(complementary_videos, features):
  """Held-out (kind, motion) accuracies of a linear readout of `features`: {split: [video, feature]}, or a function
  of a video; fitted on the train split, scored on the test split."""
  (_, train_kinds, train_motions), (_, test_kinds, test_motions) = (
      complementary_videos[split] for split in make_motion_dataset.SPLITS)
  if callable(features):
    features = {split: np.stack([features(video) for video in complementary_videos[split][0]])
                for split in make_motion_dataset.SPLITS}
  return (_held_out_accuracy(features['train'], train_kinds, features['test'], test_kinds),
          _held_out_accuracy(features['train'], train_motions, features['test'], test_motions))


@pytest.fixture(scope='module')
def complementary_flow(complementary_videos):
  """{split: (location maps, motion moments)} of the complementary videos (`_flow_summary`)."""
  return {split: tuple(np.stack(parts) for parts in zip(*(_flow_summary(video) for video in videos)))
          for split, (videos, _, _) in complementary_videos.items()}


def test_one_frame_shows_the_kind_but_not_the_motion(complementary_videos):
  """A linear readout of one frame's colour tells the kinds apart and not the motions; given two frames' flow, the
  same readout tells the motions apart, so the frame's readout is not blind by construction."""
  # One frame: its colour statistics (for the kinds and the motions) and its coarse picture (for the motions).
  middle = COMPLEMENTARY_CONFIG.num_frames // 2
  kind_accuracy, motion_accuracy = _readout_accuracies(complementary_videos,
                                                       lambda video: _chroma_histogram(video[middle]))
  _, coarse_motion_accuracy = _readout_accuracies(complementary_videos, lambda video: _coarse_frame(video[middle]))
  _, pair_motion_accuracy = _readout_accuracies(complementary_videos,
                                                lambda video: _flow_summary(video[middle:middle + 2])[1])
  figures = dict(kind=kind_accuracy, motion=motion_accuracy, coarse_motion=coarse_motion_accuracy,
                 pair_motion=pair_motion_accuracy)
  assert kind_accuracy >= 0.9, figures  # chance 1/4
  assert motion_accuracy < 0.7 and coarse_motion_accuracy < 0.7, figures  # chance 1/2
  assert pair_motion_accuracy >= 0.9, figures


def test_flow_shows_the_motion_but_not_the_kind(complementary_videos, complementary_flow):
  """A linear readout of luminance flow tells the motions apart and not the kinds, nor do its magnitudes or where the
  object moves."""
  # Motion moments and their magnitudes (speed, amounts of rotation and zoom), which a kind's own motion would show.
  features = {split: np.concatenate([moments, np.abs(moments)], axis=1)
              for split, (_, moments) in complementary_flow.items()}
  kind_accuracy, motion_accuracy = _readout_accuracies(complementary_videos, features)
  assert motion_accuracy >= 0.85, (kind_accuracy, motion_accuracy)  # chance 1/2
  assert kind_accuracy < 0.45, (kind_accuracy, motion_accuracy)  # chance 1/4
  # Over both splits, the kinds' motion locations, magnitudes and moments (less each motion's mean, so that only a
  # kind's own effect counts) differ no more than under shuffled kinds.
  kinds, motions = (np.concatenate([complementary_videos[split][i] for split in make_motion_dataset.SPLITS])
                    for i in (1, 2))
  locations, moments = (np.concatenate([complementary_flow[split][i] for split in make_motion_dataset.SPLITS])
                        for i in (0, 1))
  magnitudes = np.abs(moments)
  for motion in MOTION_PAIR:
    moments[motions == motion] -= moments[motions == motion].mean(axis=0)
  for summary in (locations, magnitudes, moments):
    assert _permutation_p_value(summary, kinds) > 0.01


def test_colour_texture_keeps_the_squeezed_luma_and_adds_each_kind_its_own_chroma():
  """Colouring changes no pixel's RGB2GRAY (the texture's luma, squeezed) and clips nothing; the kinds' chroma differ."""
  ramp = np.repeat(np.linspace(0, 255, 64, dtype=np.float32)[None, :, None], 3, axis=2)  # black to white
  primaries = np.float32([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]]])
  textures = make_motion_dataset.load_textures(40) + [ramp, primaries]
  low, high = make_motion_dataset._KIND_LUMA_RANGE
  chroma = {}
  for kind in make_motion_dataset.KINDS:
    for texture in textures:
      coloured = make_motion_dataset.colour_texture(texture, kind)
      assert coloured.shape == texture.shape and coloured.dtype == np.float32
      assert coloured.min() >= 0 and coloured.max() <= 255, kind
      squeezed = low + (high - low) / 255 * cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY)
      np.testing.assert_allclose(cv2.cvtColor(coloured, cv2.COLOR_RGB2GRAY), squeezed, atol=0.01)
      cb, cr = _chroma(coloured)
      # One chroma over the whole texture: the kind's.
      np.testing.assert_allclose(cb, make_motion_dataset.KINDS[kind][0], atol=0.05)
      np.testing.assert_allclose(cr, make_motion_dataset.KINDS[kind][1], atol=0.05)
    chroma[kind] = np.array([cb.mean(), cr.mean()])
  assert min(np.hypot(*(chroma[a] - chroma[b])) for a in chroma for b in chroma if a < b) > 30


def test_a_videos_kind_changes_its_colour_and_not_its_luma():
  """Rendered from one random stream, the four kinds' videos have the same luma (up to rounding): flow sees no kind."""
  config = COMPLEMENTARY_CONFIG
  short_side = min(config.width, config.height)
  objects = make_motion_dataset.load_textures(round(config.object_texture_scale * short_side))
  backgrounds = make_motion_dataset.load_textures(round(config.background_texture_scale * short_side))
  for stream in range(3):
    videos = {kind: make_motion_dataset.render_video(f'{kind}_translate_left', config, backgrounds, objects,
                                                     np.random.default_rng(stream))
              for kind in make_motion_dataset.KINDS}
    luma = {kind: np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in video]).astype(np.int16)
            for kind, video in videos.items()}
    for kind in make_motion_dataset.KINDS:
      # Rounding moves a pixel's luma by a level at most; the gain clips a rare very bright or dark coloured pixel.
      assert np.mean(np.abs(luma[kind] - luma['red']) > 1) < 0.01, kind
      if kind != 'red':  # the object's colour did change
        assert np.abs(videos[kind].astype(np.int16) - videos['red']).max() > 40, kind


def test_class_names_parse_and_bad_ones_are_refused():
  """`<kind>_<motion>` names round-trip through parse_class, motion-only names keep their random stream, bad ones
  are refused."""
  kinds, motions = tuple(make_motion_dataset.KINDS), tuple(make_motion_dataset.MOTIONS)
  classes = make_motion_dataset.complementary_classes(kinds, motions)
  assert len(set(classes)) == len(kinds) * len(motions)
  assert [make_motion_dataset.parse_class(name) for name in classes] == [(k, m) for k in kinds for m in motions]
  assert make_motion_dataset.complementary_classes(['red', 'blue'], MOTION_PAIR) == (
      'red_translate_left', 'red_translate_right', 'blue_translate_left', 'blue_translate_right')
  assert all(make_motion_dataset.parse_class(motion) == ('', motion) for motion in motions)
  assert make_motion_dataset.MotionDatasetConfig(classes=classes).classes == classes
  for bad in ('purple_translate_left', 'red_jump', 'red', 'translate_left_red', 'red_red_translate_left', ''):
    with pytest.raises(ValueError, match='unknown class'):
      make_motion_dataset.parse_class(bad)
    with pytest.raises(ValueError, match='classes'):
      make_motion_dataset.MotionDatasetConfig(classes=('red_translate_left', bad))
  # A motion-only video keeps the key it had before kinds existed; a kind's video gets a stream of its own.
  draws = lambda rng: rng.random(4).tolist()
  assert draws(make_motion_dataset._video_rng(3, 'test', 'zoom_in', 2)) == draws(np.random.default_rng([3, 1, 6, 2]))
  streams = [draws(make_motion_dataset._video_rng(3, 'test', name, 2))
             for name in ('zoom_in',) + make_motion_dataset.complementary_classes(kinds, ['zoom_in'])]
  assert len({tuple(stream) for stream in streams}) == len(streams)
