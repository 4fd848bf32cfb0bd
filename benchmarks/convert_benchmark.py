r"""Whole conversions (decode, TV-L1 flow, encode, write) with OpenCV's TV-L1 and with the default `auto` backend.

  python -m benchmarks.convert_benchmark [--frames_per_video=80] [--num_workers=0]

The videos are real and of four frame sizes, so four shape buckets (`benchmarks/mixed_size_videos.py`), at OpenCV's
TV-L1 parameters. Three conversions of the same list, in one run and each from scratch:

1. `--flow_backend=opencv`;
2. `--flow_backend=auto` with an empty compile cache: the backend measured, then every bucket compiled, as a first
   conversion on a machine;
3. `--flow_backend=auto` again, the cache kept: as any later conversion or a resumed one.

Each prints seconds, frame pairs per second and the ratio to OpenCV; 2 minus 3 is about what compiling cost. Then the
flow of 2 against 1 per video (each video is one bucket): the mean end-point difference of the stored flow (PNG,
dequantised) and the share of its uint8 values within one level of OpenCV's (`benchmarks/tvl1_noise_floor.py` measures
the same for OpenCV against itself).
"""

# First, before anything imports TensorFlow (also in the converter's worker processes, which 'spawn' starts from this
# module as __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from benchmarks import mixed_size_videos
from d3d_core import schema
from d3d_core import video_reader
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import manifests
from tfrecord_tools import sequence_example

flags.DEFINE_integer('frames_per_video', 80, 'Frames converted per video (the first ones at 25 fps): 4 videos of 80 '
                     'frames are 316 frame pairs.')
flags.DEFINE_integer('num_workers', 0, 'Workers of every conversion; 0: all cores.')
flags.DEFINE_string('work_dir', '', 'Folder for the videos, records and compile cache; default: a temporary folder, '
                    'removed.')
FLAGS = flags.FLAGS


def write_video_list(work_dir: pathlib.Path) -> pathlib.Path:
  videos = mixed_size_videos.video_paths(work_dir, FLAGS.frames_per_video)
  csv_path = work_dir / 'videos.csv'
  csv_path.write_text('path,label\n' + ''.join(f'{path},{path.stem}\n' for path in videos))
  return csv_path


def convert(csv_path: pathlib.Path, output_dir: pathlib.Path, backend: str, cache: pathlib.Path) -> dict:
  shutil.rmtree(output_dir, ignore_errors=True)  # a fresh conversion: a resumed one would skip the work
  config = convert_lib.ConversionConfig(
      source=manifests.SourceConfig(source='csv', input=str(csv_path)), output_dir=str(output_dir),
      name='benchmark', num_shards=4, num_workers=FLAGS.num_workers,
      decode=video_reader.DecodeConfig(max_frames=FLAGS.frames_per_video),
      flow=flow_backends.FlowConfig(backend=backend, compile_cache=str(cache)),
      encoding=sequence_example.EncodingConfig(flow_format='png'))
  report = convert_lib.run_local(config)
  if report['videos_failed']:
    raise RuntimeError(f'{report["videos_failed"]} videos failed: {report["failures"]}')
  return report


def stored_flows(output_dir: pathlib.Path) -> dict:
  """Per video (media id): its stored uint8 flow images `[T, H, W, 3]` (x, y, 0)."""
  flows = {}
  for path in sorted(output_dir.glob('benchmark-*.tfrecord')):
    for record in tf.data.TFRecordDataset(str(path)):
      example = tf.train.SequenceExample.FromString(record.numpy())
      context = example.context.feature
      media_id = context[schema.EXAMPLE_ID].bytes_list.value[0].decode()
      images = example.feature_lists.feature_list[schema.FLOW_ENCODED].feature
      flows[media_id] = np.stack([tf.io.decode_png(image.bytes_list.value[0]).numpy() for image in images])
  return flows


def flow_agreement(reference_dir: pathlib.Path, other_dir: pathlib.Path, bound: float) -> None:
  reference, other = stored_flows(reference_dir), stored_flows(other_dir)
  print(mixed_size_videos.AGREEMENT_HEADER)
  for media_id, expected in reference.items():
    print(mixed_size_videos.agreement_row(os.path.basename(media_id), expected, other[media_id], bound))


def run_benchmark(work_dir: pathlib.Path) -> None:
  work_dir.mkdir(parents=True, exist_ok=True)
  csv_path = write_video_list(work_dir)
  cache = work_dir / 'compile_cache'
  shutil.rmtree(cache, ignore_errors=True)
  workers = convert_lib.resolve_num_workers(FLAGS.num_workers)
  print(f'{os.cpu_count()} cores, {workers} workers; load average before the runs: {os.getloadavg()[0]:.2f}',
        flush=True)
  runs = {}
  for name, backend in (('opencv', 'opencv'), ('auto, first run', 'auto'), ('auto, cache kept', 'auto')):
    output_dir = work_dir / f'records_{len(runs)}'
    report = convert(csv_path, output_dir, backend, cache)
    pairs = report['frames_this_run'] - report['videos_written']  # a video's last frame repeats the flow before it
    runs[name] = dict(report, pairs=pairs, output_dir=output_dir)
  print(f'\n{"run":<18}  {"backend":>7}  {"pairs":>5}  {"seconds":>8}  {"pairs/s":>7}  {"x OpenCV":>8}')
  opencv_rate = runs['opencv']['pairs'] / runs['opencv']['seconds']
  for name, run in runs.items():
    rate = run['pairs'] / run['seconds']
    print(f'{name:<18}  {run["flow"]["backend"]:>7}  {run["pairs"]:>5}  {run["seconds"]:>8.1f}  {rate:>7.3f}  '
          f'{rate / opencv_rate:>8.2f}')
  first, kept = runs['auto, first run'], runs['auto, cache kept']
  print(f'compiling (first run - cache kept): {first["seconds"] - kept["seconds"]:.1f} s')
  print(f'auto\'s choice: {first["flow"]["backend"]} ({first["flow"]["reason"]})')
  print(f'load average after the runs: {os.getloadavg()[0]:.2f}\n')
  flow_agreement(runs['opencv']['output_dir'], runs['auto, first run']['output_dir'],
                 sequence_example.EncodingConfig().flow_bound)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.work_dir:
    run_benchmark(pathlib.Path(FLAGS.work_dir))
  else:
    with tempfile.TemporaryDirectory(prefix='convert_benchmark_') as work_dir:
      run_benchmark(pathlib.Path(work_dir))


if __name__ == '__main__':
  app.run(main)
