"""What the demo runs: its own settings, where each step writes, and the converter's and the trainer's jobs.

The three networks' training settings are not here but in `recipes/<name>.flags`, flagfiles of
`python -m official_d3d.train`; the demo adds the records, model_dir and seed, then its `overrides`.
"""

import collections
import contextlib
import csv
import dataclasses
import os
import pathlib
from typing import Mapping, Tuple

from absl import flags

from d3d_core import label_map
from d3d_core import tvl1_params
from d3d_core import video_reader
from official_d3d.configs import config_flags
from official_d3d.configs import d3d_config
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import make_motion_dataset
from tfrecord_tools import manifests

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPES = 'examples/motion_demo/recipes'  # from the repository root, as nested --flagfile paths are read
# With validation_videos_per_class: the lists of the training videos kept for training, and of those held out.
VALIDATION_TRAIN_MANIFEST = 'train_without_validation.csv'
VALIDATION_MANIFEST = 'validation.csv'
# Each network the demo trains -> its stream; its recipe is `RECIPES/<name>.flags`.
NETWORKS = {'flow_teacher': 'flow', 'rgb_baseline': 'rgb', 'd3d_student': 'd3d'}


def recipe_flag(name: str) -> str:
  """The --flagfile line of the recipe (or overlay) `name` in RECIPES."""
  return f'--flagfile={RECIPES}/{name}.flags'


# The motion-only benchmark at the size the demo trains on: translation in eight directions, 45 degrees apart, on
# 40x40 frames. Measured on the generator's default classes at 48x36 (rotation and zoom classes, objects about 16 px
# across): TV-L1 with the demo's settings misses the zooms (their rims move under a pixel a frame) and a flow network
# never learned the rotations or zooms (0 % on each, 42 % overall after 1200 steps); translations are what a 40-pixel
# frame resolves. The object is large (a third of the frame) and moves 2-3 px a frame, so that its flow stands out of
# the noise. 16 test videos per class: a top-1 near 60 % over 16 classes then has a binomial standard error of 3
# points (8 per class: 4.3), under the spread between seeds that the demo reports.
MOTION_ONLY_DATASET = dataclasses.replace(
    make_motion_dataset.MotionDatasetConfig(), classes=make_motion_dataset.TRANSLATION_CLASSES, width=40, height=40,
    videos_per_class_train=20, videos_per_class_test=16, object_radius=(0.3, 0.4), translation_speed=(0.05, 0.08),
    translation_jitter_degrees=10.0, background_drift_speed=0.003, noise_std=(1.0, 3.0))
# The demo's default: complementary streams, as on real datasets. 8 classes, an object of 4 colours x 2 directions
# of translation (left, right), the same videos otherwise: one frame shows the colour and flow does not, flow shows
# the direction and one frame does not. So an RGB network that has not found the motion is right about half the time
# (the colour, and a guess between two directions) and a flow network a quarter of the time (the direction, and a
# guess between four colours): RGB beats flow, and two-stream beats both. The objects move 0.5-0.9 px a frame, slowly
# enough that an RGB network alone does not find the direction within the demo's budget (at 0.8-1.4 px some did, in
# part), while TV-L1 still tracks it and so the teacher still teaches it (BUILD_NOTES.md, "Demo: complementary
# streams", designs D to T). 32 test videos per class: a top-1 near 50 % over 256 videos has a binomial standard error
# of 3 points.
DEMO_DATASET = dataclasses.replace(
    MOTION_ONLY_DATASET, classes=make_motion_dataset.complementary_classes(
        make_motion_dataset.KINDS, ('translate_left', 'translate_right')),
    videos_per_class_train=40, videos_per_class_test=32, translation_speed=(0.012, 0.022))
CLASS_SETS = {'kinds_x_motions': DEMO_DATASET, 'motions': MOTION_ONLY_DATASET}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """The demo's own settings; `--quick` and the demo's flags only fill this in."""
  output_dir: str = 'demo_output'
  seed: int = 0  # of the networks' initial weights and their input pipelines
  # Its own seed draws the videos: every training seed runs on the same data set, as runs on a real benchmark do.
  dataset: make_motion_dataset.MotionDatasetConfig = DEMO_DATASET
  # TV-L1 with fewer scales, warps and iterations than OpenCV's defaults: 4-5x faster, and on these small frames
  # within 0.04 px (mean end-point difference) of the default flow. Used for the records and the timed pipeline.
  tvl1: tvl1_params.Tvl1Params = tvl1_params.Tvl1Params(nscales=3, warps=2, inner_iterations=10, outer_iterations=3)
  convert_workers: int = 0  # 0: all cores
  latency_clips: int = 8  # test videos timed through both pipelines (after one warm-up)
  # > 0: choosing recipes. The first this many training videos of each class are held out and take the test split's
  # place (training and every evaluation use the rest and them); the test videos are not used.
  validation_videos_per_class: int = 0
  # Per network name: flags of `official_d3d.train` after its recipe (later flags win), e.g. an overlay flagfile.
  overrides: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
  data_dir: str = ''  # folder of the videos and records; '' for output_dir (`run_seeds` shares one between seeds)


# The smoke preset: tiny videos and training; it checks the plumbing, not the claim. Its 48 videos convert in one
# process: a worker process imports TensorFlow first (about 10 s each, per split), longer than their flow takes.
QUICK_CONFIG = DemoConfig(
    dataset=dataclasses.replace(DEMO_DATASET, videos_per_class_train=4, videos_per_class_test=2), convert_workers=1,
    latency_clips=2,
    overrides={'flow_teacher': (recipe_flag('quick'),), 'rgb_baseline': (recipe_flag('quick'),),
               'd3d_student': (recipe_flag('quick'), recipe_flag('quick_distillation'))})


@dataclasses.dataclass(frozen=True)
class DemoPaths:
  """Where each step writes."""
  root: str  # the networks, their exports, the probe and the results
  data_root: str = ''  # the videos and records; '' for root

  @classmethod
  def of(cls, config: DemoConfig) -> 'DemoPaths':
    return cls(config.output_dir, config.data_dir)

  def join(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  @property
  def videos(self) -> str:
    return os.path.join(self.data_root or self.root, 'videos')

  @property
  def records(self) -> str:
    return os.path.join(self.data_root or self.root, 'records')

  @property
  def label_map(self) -> str:
    return os.path.join(self.records, label_map.FILENAME)

  def record_pattern(self, split: str) -> str:
    return os.path.join(self.records, f'{split}-*-of-*.tfrecord')

  def model_dir(self, name: str) -> str:
    return self.join('models', name)

  def export_base(self, name: str) -> str:
    return self.join('export', name)

  def export_version(self, name: str) -> str:
    return self.join('export', name, '1')


def experiment_config(config: DemoConfig, paths: DemoPaths, name: str) -> d3d_config.ExperimentConfig:
  """The train.py run of network `name`: its recipe, the demo's overrides, then the demo's records, folder and seed."""
  argv = [recipe_flag(name), *config.overrides.get(name, ()), f'--seed={config.seed}',
          f'--train_pattern={paths.record_pattern("train")}', f'--eval_pattern={paths.record_pattern("test")}',
          f'--label_map={paths.label_map}', f'--model_dir={paths.model_dir(name)}']
  if NETWORKS[name] == 'd3d':
    argv.append(f'--teacher_checkpoint={paths.model_dir("flow_teacher")}')
  flag_values = flags.FlagValues()
  config_flags.define_flags(flag_values)
  with contextlib.chdir(REPO_ROOT):
    flag_values(['motion_demo', *argv])
  return config_flags.config_from_flags(flag_values)


def check(config: DemoConfig, paths: DemoPaths) -> None:
  """Refuses settings that train.py, or the demo's videos, cannot serve, before any work."""
  if config.latency_clips < 1:
    raise d3d_config.ConfigError(f'latency_clips must be >= 1, got {config.latency_clips}')
  if not 0 <= config.validation_videos_per_class < config.dataset.videos_per_class_train:
    raise d3d_config.ConfigError(
        f'validation_videos_per_class must be in [0, {config.dataset.videos_per_class_train}) (the training videos '
        f'per class), got {config.validation_videos_per_class}')
  for name in NETWORKS:
    data = experiment_config(config, paths, name).validate().data
    for training in (True, False):
      data.check_resize(training)
    if data.num_frames * data.stride > config.dataset.num_frames:
      raise d3d_config.ConfigError(
          f'{name}: clips of {data.num_frames} frames at stride {data.stride} are longer than the '
          f'{config.dataset.num_frames}-frame videos')


def manifest_path(config: DemoConfig, paths: DemoPaths, split: str) -> str:
  """The `path,label` list a split is converted from: the generator's, or with validation the held-out lists."""
  name = {'train': VALIDATION_TRAIN_MANIFEST, 'test': VALIDATION_MANIFEST}[split] if config.validation_videos_per_class \
      else f'{split}.csv'
  return os.path.join(paths.videos, name)


def write_validation_manifests(config: DemoConfig, paths: DemoPaths) -> None:
  """Splits the generator's train.csv: each class's first `validation_videos_per_class` videos to VALIDATION_MANIFEST,
  the rest to VALIDATION_TRAIN_MANIFEST, in the same order."""
  with open(os.path.join(paths.videos, 'train.csv'), newline='') as f:
    header, *rows = list(csv.reader(f))
  seen = collections.Counter()
  held_out, kept = [], []
  for row in rows:
    (held_out if seen[row[1]] < config.validation_videos_per_class else kept).append(row)
    seen[row[1]] += 1
  for name, selected in ((VALIDATION_MANIFEST, held_out), (VALIDATION_TRAIN_MANIFEST, kept)):
    with open(os.path.join(paths.videos, name), 'w', newline='') as f:
      csv.writer(f, lineterminator='\n').writerows([header, *selected])


def conversion_config(config: DemoConfig, paths: DemoPaths, split: str) -> convert_lib.ConversionConfig:
  """The converter's job for one split; the test split uses the train split's label map."""
  return convert_lib.ConversionConfig(
      source=manifests.SourceConfig(source='csv', input=manifest_path(config, paths, split)),
      output_dir=paths.records, name=split, num_shards=2, num_workers=config.convert_workers,
      label_map=paths.label_map if split != 'train' else '',
      # The videos are small already: keep their size (the converter's default resizes the short side to 256).
      decode=video_reader.DecodeConfig(fps=config.dataset.frame_rate, short_side=0),
      flow=flow_backends.FlowConfig(tvl1=config.tvl1))
