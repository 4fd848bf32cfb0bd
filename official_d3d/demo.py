r"""D3D end to end on a generated motion benchmark, in one command and with no download.

  python -m official_d3d.demo --output_dir=demo_output            # about 12 minutes on 2 CPU cores
  python -m official_d3d.demo --output_dir=/tmp/demo --quick      # a smoke run of a couple of minutes
  python -m official_d3d.demo --output_dir=demo_output --seed=0,1,2  # one run per seed, then mean and spread

Steps (each logged, each skipped when its output is already complete, so an interrupted demo resumes):
  1. generate the motion dataset (`tfrecord_tools.make_motion_dataset`): classes that differ by motion only;
  2. convert train and test to TFRecords with OpenCV TV-L1 flow on all cores (`tfrecord_tools.convert_lib`);
  3. train the flow teacher, 4. the RGB baseline, 5. the D3D student distilled from that teacher (`train.py`);
  6. evaluate the three, and two-stream late fusion of teacher and baseline, on the test split;
  7. export the student as a SavedModel (RGB in, no flow anywhere), and the two-stream networks for step 8;
  8. time a clip through the D3D SavedModel, and through the two-stream pipeline: TV-L1 flow of the clip's frames,
     the flow network and the RGB network;
  9. print a table, write `results.json`, `training_curves.png` and `accuracy.png`, and the paths to go on from.

Layout of `--output_dir` (with several seeds, one such folder per seed, `seed_<N>`, and `summary.json` above them):
  videos/    the generated videos and their train.csv / test.csv
  records/   train-*.tfrecord, test-*.tfrecord, label_map.txt, conversion reports
  models/    flow_teacher/, rgb_baseline/, d3d_student/ (checkpoints, config.json, eval_metrics.json, logs/)
  export/    d3d_student/1 (the deliverable), and the two-stream networks timed against it
"""

import dataclasses
import json
import os
import platform
import statistics
import time
from typing import Dict, List, Sequence, Tuple

from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from d3d_core import cli
from d3d_core import flow_quantization
from d3d_core import label_map
from d3d_core import tvl1_params
from d3d_core import video_reader
from official_d3d import export_saved_model
from official_d3d import train_lib
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import make_motion_dataset
from tfrecord_tools import manifests

# name of each trained network -> its stream in train.py
STREAMS = {'flow_teacher': 'flow', 'rgb_baseline': 'rgb', 'd3d_student': 'd3d'}
ACCURACY_NAMES = ('flow_teacher', 'rgb_baseline', 'd3d_student', 'two_stream')
RESULTS_FILENAME = 'results.json'
SUMMARY_FILENAME = 'summary.json'
HISTORY_FILENAME = 'history.jsonl'
LATENCY_FILENAME = 'latency.json'
TWO_STREAM_FILENAME = 'two_stream_metrics.json'
CURVES_FILENAME = 'training_curves.png'
ACCURACY_PLOT_FILENAME = 'accuracy.png'
SPLITS = make_motion_dataset.SPLITS


# The benchmark at the size the demo trains on: translation in eight directions, 45 degrees apart, on 40x40 frames.
# Measured on the default benchmark at 48x36 (rotation and zoom classes, objects about 16 px across): TV-L1 with the
# demo's settings misses the zooms (their rims move under a pixel a frame) and a flow network never learned the
# rotations or zooms (0 % on each, 42 % overall after 1200 steps); translations are what a 40-pixel frame resolves. The
# object is large (a third of the frame) and moves 2-3 px a frame, so that its flow stands out of the noise.
DEMO_DATASET = dataclasses.replace(
    make_motion_dataset.MotionDatasetConfig(), classes=make_motion_dataset.TRANSLATION_CLASSES, width=40, height=40,
    videos_per_class_train=20, videos_per_class_test=8, object_radius=(0.3, 0.4), translation_speed=(0.05, 0.08),
    translation_jitter_degrees=10.0, background_drift_speed=0.003, noise_std=(1.0, 3.0))


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """Everything the demo does; `--quick` and the flags only fill this in."""
  output_dir: str = 'demo_output'
  seed: int = 0
  dataset: make_motion_dataset.MotionDatasetConfig = DEMO_DATASET
  # Clips: 8 frames, each network sees the whole 40x40 frame (resized to 32). No random flip: a mirror image turns
  # left into right, so on this benchmark flipping would flip labels.
  num_frames: int = 8
  # Every other frame: the object moves 4-6 px between the frames a network sees. Measured with the RGB baseline,
  # 2000 steps, seeds 0 / 1 / 2: its training loss left chance near steps 920 / 860 / 1100 (stride 1: seed 1 at
  # 1580, seed 0 not at all) and test top-1 was 56.2 / 34.4 / 28.1 % (stride 1: 7.8 / 15.6 % on seeds 0 / 1). The
  # flow network's input does not change with the stride: each sampled frame carries its flow to the next frame.
  stride: int = 2
  crop_size: int = 32
  train_resize_range: Tuple[int, int] = (32, 36)
  eval_resize: int = 32
  # Width 0.25 of S3D-G: at 0.1 (8-channel layers) the flow teacher reached 45 % in 400 steps, 0.25 reached 84 % in the
  # same 400 steps, and XLA makes its steps as cheap.
  depth_multiplier: float = 0.25
  # The first convolution spans 7 frames (S3D-G's papers; TF-slim's default is 3). Measured on seed 1 with the RGB
  # baseline: 3 frames sat at chance until step ~1500 (17.2 % after 2000 steps), 7 frames left it by step 1000 (35.9 %);
  # on seed 0 it went the other way (20.3 % against 40.6 %). With FoldedConv3D it costs 1.1x per step (Conv3D: 1.8x).
  first_temporal_kernel_size: int = 7
  batch_size: int = 8
  # On flow the teacher learns in a few hundred steps (600 steps: 85.9-96.9 % on seeds 0-2); the RGB networks sit
  # near chance for about 500-1200 steps (at stride 2) before they find the motion, so they get the rest of the budget.
  train_steps: int = 2000  # of the RGB baseline and the D3D student (the same, for a paired comparison)
  teacher_steps: int = 600  # of the flow teacher
  steps_per_loop: int = 20
  eval_interval: int = 1000  # steps between test-split evaluations, for the curves (0: only at the end)
  # AdamW: SGD at 0.01 (at 0.05 it stayed at chance) learned the flow teacher more slowly in 400 steps.
  optimizer: str = 'adamw'
  # Peak learning rates. The RGB networks at 5e-4 (stride 2, 2000 steps, the 1e-3 teachers, seeds 0 / 1 / 2): baselines
  # 60.9 / 14.1 / 54.7 %, students 75.0 / 32.8 / 70.3 %; at 1e-3 baselines 56.2 / 34.4 / 28.1 %, students 50.0 / 48.4 /
  # 54.7 %. The student's paired gain went from -6.3 / +14.1 / +26.6 to +14.1 / +18.8 / +15.6 points.
  learning_rate: float = 0.0005  # of the RGB baseline and the D3D student
  teacher_learning_rate: float = 0.001
  # S3D-G's batch-norm momentum (0.999) suits 80k-step runs: after a few hundred steps the moving statistics that
  # evaluation uses would still be mostly their initial values. 0.9 settles within the demo's training.
  batch_norm_momentum: float = 0.9
  weight_decay: float = 1e-5
  # XLA on CPU: each network compiles for about 40 s, then steps about 2x faster than without.
  jit_compile: bool = True
  # Hinton's distillation: KL between the teacher's and the student's class distributions softened at T=4. Measured
  # on seed 0: L2 on the logits (their scale dominated the loss) left the student at 15.6 % against the baseline's
  # 28.1 %; KL at T=4 reached 34.4 %.
  distill_target: str = 'logits'
  distill_loss: str = 'kl'
  distill_weight: float = 1.0
  distill_temperature: float = 4.0
  # Labels alone until step 800, then distillation growing to its full weight by step 1200. Measured with baseline and
  # student paired (same weights, same clips): from step 0 the student fell behind the baseline on 4 of 6 runs (seed 0
  # at 2000 steps: 23.4 % against 40.6 %). Until a network sees motion (800-1000 steps here), the teacher's soft
  # targets carry the label, which the student has, plus motion detail that it cannot use yet.
  distill_start_step: int = 800
  distill_ramp_steps: int = 400
  # TV-L1 with fewer scales, warps and iterations than OpenCV's defaults: 4-5x faster, and on these small frames
  # within 0.04 px (mean end-point difference) of the default flow. Used for the records and the timed pipeline.
  tvl1: tvl1_params.Tvl1Params = tvl1_params.Tvl1Params(nscales=3, warps=2, inner_iterations=10,
                                                        outer_iterations=3)
  convert_workers: int = 0  # 0: all cores
  latency_clips: int = 8  # test videos timed through both pipelines (after one warm-up each)

  def __post_init__(self):
    if self.num_frames * self.stride > self.dataset.num_frames:
      raise d3d_config.ConfigError(
          f'clips of {self.num_frames} frames at stride {self.stride} are longer than the '
          f'{self.dataset.num_frames}-frame videos')
    if self.eval_resize < self.crop_size or min(self.train_resize_range) < self.crop_size:
      raise d3d_config.ConfigError(
          f'resize sizes {self.train_resize_range} / {self.eval_resize} must be >= crop {self.crop_size}')
    if self.latency_clips < 1:
      raise d3d_config.ConfigError(f'latency_clips must be >= 1, got {self.latency_clips}')


# The smoke preset: tiny videos, network and training; it checks the plumbing, not the claim.
QUICK_CONFIG = DemoConfig(
    dataset=dataclasses.replace(DEMO_DATASET, videos_per_class_train=3, videos_per_class_test=1),
    batch_size=4, train_steps=6, teacher_steps=6, steps_per_loop=3, eval_interval=0, distill_start_step=3,
    distill_ramp_steps=0, jit_compile=False, latency_clips=2)


@dataclasses.dataclass(frozen=True)
class DemoPaths:
  """Where each step writes."""
  root: str

  def join(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  @property
  def videos(self) -> str:
    return self.join('videos')

  @property
  def records(self) -> str:
    return self.join('records')

  @property
  def label_map(self) -> str:
    return self.join('records', label_map.FILENAME)

  def record_pattern(self, split: str) -> str:
    return self.join('records', f'{split}-*-of-*.tfrecord')

  def model_dir(self, name: str) -> str:
    return self.join('models', name)

  def export_base(self, name: str) -> str:
    return self.join('export', name)

  def export_version(self, name: str) -> str:
    return self.join('export', name, '1')


def _log_step(number: int, text: str) -> None:
  logging.info('[demo %d/9] %s', number, text)
  print(f'[demo {number}/9] {text}', flush=True)


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, value) -> None:
  temporary = path + '.tmp'
  with open(temporary, 'w') as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(temporary, path)


def _as_json(value):
  """The value as it reads back from a JSON file (tuples become lists), for comparisons with saved settings."""
  return json.loads(json.dumps(value))


def generate_videos(config: DemoConfig, paths: DemoPaths) -> None:
  """Step 1. The dataset's config file is written last, so its presence marks a complete dataset."""
  dataset = dataclasses.replace(config.dataset, seed=config.seed)
  saved_path = os.path.join(paths.videos, make_motion_dataset.CONFIG_FILENAME)
  if os.path.exists(saved_path):
    if _read_json(saved_path)['config'] != _as_json(dataclasses.asdict(dataset)):
      raise d3d_config.ConfigError(
          f'{saved_path} describes another dataset than this demo\'s settings: use another '
          '--output_dir, or delete that one')
    _log_step(1, f'Motion dataset already in {paths.videos}: skipped')
    return
  total = sum(dataset.videos_per_class(split) for split in SPLITS) * len(dataset.classes)
  _log_step(1, f'Generating {total} videos of {len(dataset.classes)} motion classes in {paths.videos}')
  make_motion_dataset.generate_dataset(dataset, paths.videos)


def conversion_config(config: DemoConfig, paths: DemoPaths, split: str) -> convert_lib.ConversionConfig:
  """The converter's job for one split; the test split uses the train split's label map."""
  return convert_lib.ConversionConfig(
      source=manifests.SourceConfig(source='csv', input=os.path.join(paths.videos, f'{split}.csv')),
      output_dir=paths.records, name=split, num_shards=2, num_workers=config.convert_workers,
      label_map=paths.label_map if split != 'train' else '',
      # The videos are small already: keep their size (the converter's default resizes the short side to 256).
      decode=video_reader.DecodeConfig(fps=config.dataset.frame_rate, short_side=0),
      flow=flow_backends.FlowConfig(tvl1=config.tvl1))


def convert_records(config: DemoConfig, paths: DemoPaths) -> Dict[str, dict]:
  """Step 2. The converter resumes by itself; a split whose report exists is complete."""
  reports = {}
  for split in SPLITS:
    conversion = conversion_config(config, paths, split)
    report_path = convert_lib.report_path(paths.records, split)
    if os.path.exists(report_path):
      _log_step(2, f'{split} records already in {paths.records}: skipped')
      reports[split] = _read_json(report_path)
      continue
    _log_step(2, f'Converting the {split} videos to TFRecords with TV-L1 flow '
              f'({convert_lib.resolve_num_workers(conversion.num_workers)} workers)')
    report = convert_lib.run_local(conversion)
    if report['videos_failed']:
      raise RuntimeError(f'{report["videos_failed"]} {split} videos failed to convert: see {report_path}')
    convert_lib.write_report(conversion, report)
    reports[split] = report
  return reports


def experiment_config(config: DemoConfig, paths: DemoPaths, name: str) -> d3d_config.ExperimentConfig:
  """The train.py run of one network: the same data, network size and schedule for all three."""
  data = d3d_config.DataConfig(
      train_pattern=paths.record_pattern('train'), eval_pattern=paths.record_pattern('test'),
      label_map=paths.label_map, num_frames=config.num_frames, stride=config.stride, crop_size=config.crop_size,
      train_resize_range=tuple(config.train_resize_range), eval_resize=config.eval_resize, random_flip=False,
      global_batch_size=config.batch_size, eval_batch_size=config.batch_size, num_eval_clips=1, num_eval_crops=1,
      shuffle_buffer=256, seed=config.seed,
      # The same clips in the same order for the baseline and the student (which also start from the same weights):
      # the two runs differ only by distillation. In free order the same seed gave a student at 34.4 % and at 20.3 %.
      deterministic=True)
  model = d3d_config.ModelConfig(depth_multiplier=config.depth_multiplier, min_depth=8, dropout_rate=0.0,
                                 first_temporal_kernel_size=config.first_temporal_kernel_size,
                                 batch_norm_momentum=config.batch_norm_momentum)
  stream = STREAMS[name]
  # Only the student is distilled: the other runs keep the default settings, so a new recipe leaves them valid.
  distillation = d3d_config.DistillationConfig(
      target=config.distill_target, loss=config.distill_loss, weight=config.distill_weight,
      temperature=config.distill_temperature, start_step=config.distill_start_step,
      ramp_steps=config.distill_ramp_steps) if stream == 'd3d' else d3d_config.DistillationConfig()
  steps = config.teacher_steps if stream == 'flow' else config.train_steps
  learning_rate = config.teacher_learning_rate if stream == 'flow' else config.learning_rate
  training = d3d_config.TrainConfig(
      optimizer=config.optimizer, learning_rate=learning_rate, momentum=0.9, weight_decay=config.weight_decay,
      schedule='cosine', warmup_steps=steps // 10, train_steps=steps, steps_per_loop=config.steps_per_loop,
      eval_interval=config.eval_interval, jit_compile=config.jit_compile)
  return d3d_config.ExperimentConfig(
      stream=stream, model_dir=paths.model_dir(name),
      teacher_checkpoint=paths.model_dir('flow_teacher') if stream == 'd3d' else '',
      data=data, model=model, distillation=distillation, train=training)


class HistoryLogger(keras.callbacks.Callback):
  """Appends each loop's logs to a JSON-lines file, so curves survive an interrupted and resumed run."""

  def __init__(self, path: str, steps_per_loop: int):
    super().__init__()
    self.path = path
    self.steps_per_loop = steps_per_loop

  def on_epoch_end(self, epoch, logs=None):
    entry = {'step': (epoch + 1) * self.steps_per_loop, **{k: float(v) for k, v in (logs or {}).items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(entry) + '\n')


def read_history(model_dir: str) -> List[dict]:
  """The logged loops, the last entry per step winning (a resumed run repeats the loop it was killed in)."""
  path = os.path.join(model_dir, HISTORY_FILENAME)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    entries = {entry['step']: entry for entry in map(json.loads, filter(str.strip, f))}
  return [entries[step] for step in sorted(entries)]


def train_network(config: DemoConfig, paths: DemoPaths, name: str, number: int) -> dict:
  """Steps 3-5: trains one network and evaluates it on the test split; returns its evaluation metrics."""
  experiment = experiment_config(config, paths, name)
  # A recipe changed since an earlier run in this output_dir is refused, not answered with that run's results.
  train_lib.check_saved_config(train_lib.resolve_config(experiment))
  metrics_path = os.path.join(experiment.model_dir, train_lib.EVAL_METRICS_FILENAME)
  if os.path.exists(metrics_path) and _read_json(metrics_path).get('step') == experiment.train.train_steps:
    _log_step(number, f'{name} already trained and evaluated in {experiment.model_dir}: skipped')
    return _read_json(metrics_path)
  what = {'flow': 'the flow teacher (TV-L1 flow in)', 'rgb': 'the RGB baseline (RGB in, no teacher)',
          'd3d': f'the D3D student (RGB in, distilled from the flow teacher\'s {config.distill_target}, '
                 f'{config.distill_loss}, weight {config.distill_weight:g})'}[experiment.stream]
  _log_step(number, f'Training {what} for {experiment.train.train_steps} steps in {experiment.model_dir}')
  os.makedirs(experiment.model_dir, exist_ok=True)
  # The previous network's functions and graphs would stay alive in this process: a fresh Keras state per network.
  keras.backend.clear_session()
  keras.utils.set_random_seed(config.seed)
  history = HistoryLogger(os.path.join(experiment.model_dir, HISTORY_FILENAME), config.steps_per_loop)
  return train_lib.run_experiment(experiment, 'train_and_eval', callbacks=[history])['eval']


def evaluate_fusion(config: DemoConfig, paths: DemoPaths) -> dict:
  """Step 6: two-stream late fusion of the flow teacher and the RGB baseline (equal weights)."""
  path = paths.join('models', TWO_STREAM_FILENAME)
  if os.path.exists(path):
    _log_step(6, f'Two-stream evaluation already in {path}: skipped')
    return _read_json(path)
  _log_step(6, 'Evaluating two-stream late fusion (flow teacher + RGB baseline) on the test split')
  data = experiment_config(config, paths, 'rgb_baseline').data
  return train_lib.evaluate_two_stream(paths.model_dir('rgb_baseline'), paths.model_dir('flow_teacher'), data,
                                   output_path=path)


def export_models(paths: DemoPaths) -> Dict[str, str]:
  """Step 7: the student as a SavedModel, and the two-stream networks, exported the same way to time them fairly."""
  exported = {}
  for name in STREAMS:
    version = paths.export_version(name)
    if os.path.exists(os.path.join(version, 'saved_model.pb')):
      _log_step(7, f'{name} SavedModel already in {version}: skipped')
    else:
      _log_step(7, f'Exporting {name} as a SavedModel to {version}')
      export_saved_model.export(paths.model_dir(name), paths.export_base(name), version=1)
    exported[name] = version
  return exported


def _serving_function(saved_model_dir: str):
  return tf.saved_model.load(saved_model_dir).signatures[export_saved_model.VIDEO_SIGNATURE]


def _median_ms(seconds: Sequence[float]) -> float:
  return round(1000 * statistics.median(seconds), 2)


def sampled_flow(backend: flow_backends.FlowBackend, frames: np.ndarray, indices: np.ndarray) -> np.ndarray:
  """Flow `[T, H, W, 2]` of a clip at the frame `indices` a network samples, zero at the frames it skips.

  Frame i's flow is the motion from i to i + 1, and the last frame's repeats the one before, as in the records: a
  two-stream pipeline at stride s computes one pair per sampled frame, not every pair of the span.
  """
  flow = np.zeros(frames.shape[:3] + (2,), np.float32)
  pairs = {}
  for index in indices:
    start = min(index, len(frames) - 2)
    if start not in pairs:
      pairs[start] = backend.pair_flows(frames[start:start + 2])[0]
    flow[index] = pairs[start]
  return flow


def measure_latency(config: DemoConfig, paths: DemoPaths, exported: Dict[str, str]) -> dict:
  """Step 8: median wall time per clip, decoded frames in, class probabilities out, batch of one, this machine.

  D3D: the student's SavedModel on the RGB frames. Two-stream: OpenCV TV-L1 flow of the frames the flow network
  samples (quantised as the converter stores it), the flow teacher's SavedModel on it, the RGB baseline's on the
  frames, and the fusion of the two.
  """
  path = paths.join(LATENCY_FILENAME)
  if os.path.exists(path):
    _log_step(8, f'Latency already measured in {path}: skipped')
    return _read_json(path)
  _log_step(8, f'Timing {config.latency_clips} test clips through the D3D SavedModel and the two-stream pipeline')
  conversion = conversion_config(config, paths, 'test')
  test_manifest = manifests.read_manifest(manifests.SourceConfig(source='csv', input=os.path.join(paths.videos,
                                                                                                    'test.csv')))
  # One clip of the network's length per video, as the serving graph would sample it.
  span = config.num_frames * config.stride
  clips = [video_reader.read_video(entry.path, conversion.decode).frames[:span] for entry in test_manifest.entries]
  clips = [clips[i] for i in np.linspace(0, len(clips) - 1, config.latency_clips + 1).astype(int)]
  d3d = _serving_function(exported['d3d_student'])
  rgb = _serving_function(exported['rgb_baseline'])
  flow_network = _serving_function(exported['flow_teacher'])
  tvl1 = flow_backends.create_backend(conversion.flow)
  flow_bound = conversion.encoding.flow_bound
  sampled = video_input.eval_clip_indices(span, experiment_config(config, paths, 'flow_teacher').data)[0].numpy()

  def run_d3d(frames):
    return d3d(video=tf.constant(frames[None]))['probabilities'].numpy()

  def run_two_stream(frames):
    started = time.perf_counter()
    flow_images = flow_quantization.quantize_flow(sampled_flow(tvl1, frames, sampled), flow_bound)
    flow_seconds = time.perf_counter() - started
    flow_probabilities = flow_network(flow=tf.constant(flow_images[None]))['probabilities'].numpy()
    rgb_probabilities = rgb(video=tf.constant(frames[None]))['probabilities'].numpy()
    return (flow_probabilities + rgb_probabilities) / 2, flow_seconds

  run_d3d(clips[0])  # warm-up: the first call of a loaded function builds its graph
  run_two_stream(clips[0])
  timings = {'d3d': [], 'two_stream': [], 'tvl1_flow': []}
  for frames in clips[1:]:
    started = time.perf_counter()
    run_d3d(frames)
    timings['d3d'].append(time.perf_counter() - started)
    started = time.perf_counter()
    _, flow_seconds = run_two_stream(frames)
    timings['two_stream'].append(time.perf_counter() - started)
    timings['tvl1_flow'].append(flow_seconds)
  latency = {
      'd3d_ms_per_clip': _median_ms(timings['d3d']),
      'two_stream_ms_per_clip': _median_ms(timings['two_stream']),
      'tvl1_flow_ms_per_clip': _median_ms(timings['tvl1_flow']),
      'clips_timed': len(clips) - 1,
      'frames_per_clip': config.num_frames,
      'stride': config.stride,
      'frame_size': [config.dataset.width, config.dataset.height],
      'cpu_cores': convert_lib.resolve_num_workers(0),
      'gpu': bool(tf.config.list_logical_devices('GPU')),
  }
  latency['two_stream_over_d3d'] = round(latency['two_stream_ms_per_clip'] / latency['d3d_ms_per_clip'], 2)
  _write_json(path, latency)
  return latency


def format_table(results: dict) -> str:
  """The demo's table: top-1 per model, and per-clip latency of D3D against two-stream."""
  top_1, latency = results['top_1'], results['latency']
  inference = {'flow_teacher': 'TV-L1 flow + flow net', 'rgb_baseline': 'RGB', 'd3d_student': 'RGB only',
               'two_stream': 'RGB + TV-L1 flow + both nets'}
  rows = [f'{"model":<14} {"test top-1":>10}   inference input',
          *(f'{name:<14} {top_1[name]:>10.3f}   {inference[name]}' for name in ACCURACY_NAMES),
          f'(chance: {results["chance"]:.3f}, {results["num_test_videos"]} test videos)',
          '',
          f'{"latency per clip":<28} {"ms":>9}',
          f'{"D3D SavedModel":<28} {latency["d3d_ms_per_clip"]:>9.1f}',
          f'{"two-stream (incl. TV-L1)":<28} {latency["two_stream_ms_per_clip"]:>9.1f}',
          f'{"  of which TV-L1 flow":<28} {latency["tvl1_flow_ms_per_clip"]:>9.1f}',
          f'two-stream / D3D: {latency["two_stream_over_d3d"]:.1f}x '
          f'({latency["frames_per_clip"]} frames at stride {latency["stride"]}, '
          f'{latency["frame_size"][0]}x{latency["frame_size"][1]}, '
          f'{latency["cpu_cores"]} CPU cores{", GPU" if latency["gpu"] else ""})']
  return '\n'.join(rows)


def plot_results(results: dict, histories: Dict[str, List[dict]], paths: DemoPaths) -> Dict[str, str]:
  """training_curves.png (cross-entropy and top-1 of the three networks) and accuracy.png (test top-1 bars)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  colours = {'flow_teacher': 'tab:blue', 'rgb_baseline': 'tab:orange', 'd3d_student': 'tab:green',
             'two_stream': 'tab:purple'}
  figure, (loss_axes, accuracy_axes) = pyplot.subplots(1, 2, figsize=(11, 4))
  for name, history in histories.items():
    steps = [entry['step'] for entry in history]
    loss_axes.plot(steps, [entry['cls_loss'] for entry in history], color=colours[name], label=name)
    accuracy_axes.plot(steps, [entry['top_1'] for entry in history], color=colours[name], label=f'{name} (train)')
    evaluated = [entry for entry in history if 'val_top_1' in entry]
    if evaluated:
      accuracy_axes.plot([entry['step'] for entry in evaluated], [entry['val_top_1'] for entry in evaluated],
                         color=colours[name], linestyle='--', marker='o', label=f'{name} (test)')
  loss_axes.set(xlabel='training step', ylabel='cross-entropy (train)', title='Loss')
  accuracy_axes.set(xlabel='training step', ylabel='top-1', ylim=(0, 1.02), title='Accuracy')
  loss_axes.legend()
  accuracy_axes.legend(fontsize='small')
  figure.tight_layout()
  curves_path = paths.join(CURVES_FILENAME)
  figure.savefig(curves_path, dpi=100)
  pyplot.close(figure)

  figure, axes = pyplot.subplots(figsize=(6, 4))
  values = [results['top_1'][name] for name in ACCURACY_NAMES]
  bars = axes.bar(ACCURACY_NAMES, values, color=[colours[name] for name in ACCURACY_NAMES])
  axes.bar_label(bars, fmt='%.2f')
  axes.axhline(results['chance'], color='gray', linestyle=':', label='chance')
  axes.set(ylabel='test top-1', ylim=(0, 1.05), title=f'Motion benchmark, seed {results["seed"]}')
  axes.legend()
  figure.tight_layout()
  accuracy_path = paths.join(ACCURACY_PLOT_FILENAME)
  figure.savefig(accuracy_path, dpi=100)
  pyplot.close(figure)
  return {'training_curves': curves_path, 'accuracy_plot': accuracy_path}


def next_commands(config: DemoConfig, paths: DemoPaths) -> List[str]:
  """What a user can run next on the demo's outputs."""
  first_class = config.dataset.classes[0]
  video = os.path.join(paths.videos, 'test', first_class, f'{first_class}_000{config.dataset.extension}')
  return [
      f'python -m tfrecord_tools.inspect_records --records={paths.record_pattern("test")} '
      f'--output_dir={paths.join("inspect")}',
      f'tensorboard --logdir={paths.join("models")}',
      f'python -m official_d3d.serving.client --video={video} --saved_model={paths.export_version("d3d_student")} '
      '--num_frames=0 --short_side=0',
      f'saved_model_cli show --dir={paths.export_version("d3d_student")} --all',
      f'tensorflow_model_server --rest_api_port=8501 --model_name=d3d '
      f'--model_base_path={os.path.abspath(paths.export_base("d3d_student"))}',
  ]


def machine_description() -> Dict[str, object]:
  """What a seed's figures depend on beyond the seed: the floating-point rounding of XLA's and oneDNN's CPU kernels
  follows the instruction sets they compile for, so another CPU gives other (equally valid) accuracies."""
  flags_line, model = '', platform.processor()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          model = value.strip()
        elif key.strip() == 'flags':
          flags_line = value
  return {'cpu': model, 'cores': os.cpu_count(), 'tensorflow': tf.__version__,
          'instruction_sets': sorted(set(flags_line.split()) & {'avx', 'avx2', 'fma', 'avx512f', 'amx_tile'}),
          'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''), 'ONEDNN_MAX_CPU_ISA': os.environ.get('ONEDNN_MAX_CPU_ISA', '')}


def run_demo(config: DemoConfig) -> dict:
  """Runs (or resumes) the whole demo in `config.output_dir`; prints the table and returns the results."""
  paths = DemoPaths(config.output_dir)
  for name in STREAMS:  # Settings that train.py would refuse fail now, not after generation and conversion.
    experiment_config(config, paths, name).validate()
  os.makedirs(paths.root, exist_ok=True)
  started = time.monotonic()
  generate_videos(config, paths)
  reports = convert_records(config, paths)
  metrics = {name: train_network(config, paths, name, number)
             for number, name in ((3, 'flow_teacher'), (4, 'rgb_baseline'), (5, 'd3d_student'))}
  fusion = evaluate_fusion(config, paths)
  metrics['two_stream'] = fusion['two_stream']
  exported = export_models(paths)
  latency = measure_latency(config, paths, exported)

  _log_step(9, 'Results')
  class_names = label_map.read_label_map(paths.label_map)
  results = {
      'seed': config.seed,
      'machine': machine_description(),
      'config': _as_json(dataclasses.asdict(config)),
      'top_1': {name: metrics[name]['top_1'] for name in ACCURACY_NAMES},
      'top_5': {name: metrics[name]['top_5'] for name in ACCURACY_NAMES},
      'mean_class_accuracy': {name: metrics[name]['mean_class_accuracy'] for name in ACCURACY_NAMES},
      'chance': 1.0 / len(class_names),
      'num_test_videos': reports['test']['videos_written'],
      'num_train_videos': reports['train']['videos_written'],
      'latency': latency,
      'paths': {
          'videos': paths.videos,
          'train_records': paths.record_pattern('train'),
          'test_records': paths.record_pattern('test'),
          'label_map': paths.label_map,
          **{f'{name}_model_dir': paths.model_dir(name) for name in STREAMS},
          'd3d_saved_model': exported['d3d_student'],
          'results': paths.join(RESULTS_FILENAME),
      },
  }
  results['paths'].update(plot_results(results, {name: read_history(paths.model_dir(name)) for name in STREAMS},
                                       paths))
  results['seconds_this_run'] = round(time.monotonic() - started, 1)
  _write_json(paths.join(RESULTS_FILENAME), results)
  print('\n' + format_table(results) + '\n')
  print('Outputs:')
  for name, path in results['paths'].items():
    print(f'  {name:<24} {path}')
  print('Next:')
  for command in next_commands(config, paths):
    print(f'  {command}')
  return results


def summarize(results: Sequence[dict]) -> dict:
  """Mean and sample standard deviation over seeds of each top-1 and latency."""
  def spread(values):
    return {'mean': round(statistics.mean(values), 4),
            'std': round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            'values': [round(v, 4) for v in values]}
  latency_keys = ('d3d_ms_per_clip', 'two_stream_ms_per_clip', 'two_stream_over_d3d')
  return {'seeds': [r['seed'] for r in results],
          'top_1': {name: spread([r['top_1'][name] for r in results]) for name in ACCURACY_NAMES},
          # Per seed the student and the baseline start from the same weights and see the same clips: the
          # difference is what distillation did in that run.
          'student_gain': spread([r['top_1']['d3d_student'] - r['top_1']['rgb_baseline'] for r in results]),
          'latency': {key: spread([r['latency'][key] for r in results]) for key in latency_keys}}


def format_summary(summary: dict) -> str:
  rows = [f'{"model":<14} {"test top-1 (mean +- std over seeds " + ",".join(map(str, summary["seeds"])) + ")"}']
  rows += [f'{name:<14} {s["mean"]:.3f} +- {s["std"]:.3f}   {s["values"]}'
           for name, s in summary['top_1'].items()]
  gain = summary['student_gain']
  rows.append(f'{"D3D - RGB":<14} {gain["mean"]:+.3f} +- {gain["std"]:.3f}   {gain["values"]}  (same seed, paired)')
  rows += [f'{key:<24} {s["mean"]:.2f} +- {s["std"]:.2f}' for key, s in summary['latency'].items()]
  return '\n'.join(rows)


def run_seeds(config: DemoConfig, seeds: Sequence[int]) -> dict:
  """One demo per seed in `<output_dir>/seed_<N>` (or `output_dir` itself for one seed); several get a summary."""
  if len(seeds) == 1:
    return run_demo(dataclasses.replace(config, seed=seeds[0]))
  results = [run_demo(dataclasses.replace(config, seed=seed, output_dir=os.path.join(config.output_dir,
                                                                                      f'seed_{seed}')))
             for seed in seeds]
  summary = summarize(results)
  _write_json(os.path.join(config.output_dir, SUMMARY_FILENAME), summary)
  print('\n' + format_summary(summary))
  print(f'Summary: {os.path.join(config.output_dir, SUMMARY_FILENAME)}')
  return summary


FLAGS = flags.FLAGS
flags.DEFINE_string('output_dir', DemoConfig.output_dir, 'Folder for everything the demo writes.')
flags.DEFINE_list('seed', [str(DemoConfig.seed)], 'Seed of the dataset and training; several (0,1,2) run one demo '
                  'each under <output_dir>/seed_<N> and print the mean and spread.')
flags.DEFINE_bool('quick', False, 'Smoke preset of a couple of minutes: tiny videos, network and training.')
flags.DEFINE_integer('train_steps', None, 'Training steps of the RGB baseline and the D3D student (a multiple of '
                     f'the loop length, {DemoConfig.steps_per_loop}; {QUICK_CONFIG.steps_per_loop} with --quick). '
                     'Default: the preset.')
flags.DEFINE_integer('teacher_steps', None, 'Training steps of the flow teacher (a multiple of the loop length). '
                     'Default: the preset.')
flags.DEFINE_float('distill_weight', None, 'Weight of the distillation loss of the D3D student. Default: the preset.')
flags.DEFINE_enum('distill_target', None, d3d_config.DISTILL_TARGETS, 'What the student mimics: the teacher\'s '
                  'logits or pooled features. Default: the preset.')
flags.DEFINE_enum('distill_loss', None, d3d_config.DISTILL_LOSSES, 'l2, or kl (temperature KL on logits).')
flags.DEFINE_float('distill_temperature', None, 'Temperature of the kl distillation loss.')
flags.DEFINE_integer('distill_start_step', None, 'Step from which the student is distilled (labels alone before).')
flags.DEFINE_integer('distill_ramp_steps', None, 'Steps over which the distillation weight then grows to its value.')
flags.DEFINE_integer('convert_workers', None, 'Processes computing TV-L1 flow; 0: all cores.')


def config_from_flags() -> DemoConfig:
  """The preset (default or --quick) with the flags given on the command line."""
  overrides = {name: FLAGS[name].value for name in ('train_steps', 'teacher_steps', 'distill_weight', 'distill_target',
                                                    'distill_loss', 'distill_temperature', 'distill_start_step',
                                                    'distill_ramp_steps', 'convert_workers')
               if FLAGS[name].value is not None}
  return dataclasses.replace(QUICK_CONFIG if FLAGS.quick else DemoConfig(), output_dir=FLAGS.output_dir, **overrides)


def main(argv):
  del argv  # the flags parser refuses arguments that are not flags
  try:
    seeds = [int(seed) for seed in FLAGS.seed]
  except ValueError:
    raise d3d_config.ConfigError(f'--seed takes comma-separated integers, got {",".join(FLAGS.seed)}') from None
  # TensorFlow's INFO lines (one per SavedModel function, per checkpoint) would drown the demo's progress lines.
  tf.get_logger().setLevel('WARNING')
  run_seeds(config_from_flags(), seeds)


if __name__ == '__main__':
  cli.run_main(main, train_lib.USER_ERRORS, interrupted='rerun the same command to resume: finished steps are kept')
