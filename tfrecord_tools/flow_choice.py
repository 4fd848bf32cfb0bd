"""`--flow_backend=auto`: TensorFlow's TV-L1 or OpenCV's, whichever computes this data set's flow faster here.

The choice is measured, not guessed. TensorFlow's TV-L1 (XLA, shape buckets) is the faster one on a GPU and, on the
CPUs measured so far, per core too (BUILD_NOTES.md, "Conversion at the fastest backend's speed"); on tiny frames its
per-call cost can lose. So one process set up as the conversion's workers are (same threads) times both backends on
the first frame pairs of the first readable video, and the conversion takes the faster at steady state; the compile
(or the load of a cached program) is reported apart, since a worker pays it once per frame-size bucket.

A resumed conversion, or another split converted into the same folder with the same settings, takes the backend the
data set holds already, without measuring again: one data set, one implementation's flow.
"""

import dataclasses
import multiprocessing
import time
from typing import Optional, Sequence, Tuple

import cv2

from d3d_core import quiet_start
from d3d_core import video_reader
from tfrecord_tools import flow_backends
from tfrecord_tools import manifests

_VIDEOS_TRIED = 5  # unreadable videos skipped before giving up measuring
# Frames decoded to find the middle of a video: an opening is often still, and TV-L1 converges faster on still frames.
_FRAMES_SEARCHED = 250
_PAIRS = 2  # frame pairs timed: OpenCV's first (it costs the same every time), TensorFlow's all, twice


@dataclasses.dataclass(frozen=True)
class Choice:
  """The resolved flow settings, and one line that says why."""
  flow: flow_backends.FlowConfig
  reason: str


def set_tensorflow_threads(threads: int) -> None:
  """Caps this process's TensorFlow threads (XLA's included), so that workers share the cores without
  oversubscription; once TensorFlow's runtime has started the cap can no longer change, and it is left as it is."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError:
    pass


def _seconds_per_pair(flow: flow_backends.FlowConfig, frames) -> dict:
  """In a worker-like process: each backend's steady seconds per frame pair on `frames`, and TensorFlow's first call
  (its compile, or the load of a cached program)."""
  cv2.setNumThreads(1)
  opencv = flow_backends.create_backend(dataclasses.replace(flow, backend='opencv'))
  started = time.perf_counter()
  opencv.pair_flows(frames[:2])
  opencv_seconds = time.perf_counter() - started
  tensorflow = flow_backends.create_backend(dataclasses.replace(flow, backend='tf'))
  started = time.perf_counter()
  tensorflow.pair_flows(frames)
  first_call = time.perf_counter() - started
  started = time.perf_counter()
  tensorflow.pair_flows(frames)
  tf_seconds = (time.perf_counter() - started) / (len(frames) - 1)
  return {'opencv': opencv_seconds, 'tf': tf_seconds, 'tf_first_call': first_call}


def _sample_frames(entries: Sequence[manifests.VideoEntry], decode: video_reader.DecodeConfig, num_frames: int):
  """`num_frames` frames from the middle of the first video, among the first few, that is readable and has that
  many (of its first `_FRAMES_SEARCHED`); or None."""
  decode = dataclasses.replace(decode, max_frames=min(decode.max_frames or _FRAMES_SEARCHED, _FRAMES_SEARCHED))
  for entry in entries[:_VIDEOS_TRIED]:
    try:
      frames = video_reader.read_video(entry.path, decode, entry.start, entry.end).frames
    except video_reader.VideoDecodeError:
      continue
    if len(frames) >= num_frames:
      middle = (len(frames) - num_frames) // 2
      return frames[middle:middle + num_frames]
  return None


def measure(flow: flow_backends.FlowConfig, frames, threads: int) -> dict:
  """`_seconds_per_pair` in a fresh process, started as the conversion's workers are (TensorFlow's threads can only
  be set before its runtime starts, and the measuring process's memory is returned when it ends)."""
  context = multiprocessing.get_context('spawn')
  initializer, initargs = quiet_start.quiet_initializer(set_tensorflow_threads, threads)
  with flow_backends.compile_cache(flow.compile_cache):  # the workers will load what this process compiles
    pool = context.Pool(1, initializer=initializer, initargs=initargs)
  with pool:
    return pool.apply(_seconds_per_pair, (flow, frames))


def resolve(flow: flow_backends.FlowConfig, entries: Sequence[manifests.VideoEntry],
            decode: video_reader.DecodeConfig, threads: int, earlier: Optional[Tuple[str, str]] = None) -> Choice:
  """`flow` with `auto` replaced by a backend, measured on `entries`' first readable video with `threads` TensorFlow
  threads per worker; other backends are kept. `earlier`: (backend, why) that the data set already holds, kept."""
  if flow.backend != flow_backends.AUTO:
    return Choice(flow, f'--flow_backend={flow.backend}')
  if earlier:
    return Choice(dataclasses.replace(flow, backend=earlier[0]), earlier[1])
  if flow.use_initial_flow:
    return Choice(dataclasses.replace(flow, backend='opencv'),
                  'use_initial_flow needs OpenCV: TensorFlow computes a video\'s pairs together')
  frames = _sample_frames(entries, decode, _PAIRS + 1)
  if frames is None:
    return Choice(dataclasses.replace(flow, backend='opencv'), f'none of the first {_VIDEOS_TRIED} videos could be '
                  'read to measure the backends')
  seconds = measure(flow, frames, threads)
  backend = 'tf' if seconds['tf'] < seconds['opencv'] else 'opencv'
  ratio = max(seconds['tf'], seconds['opencv']) / min(seconds['tf'], seconds['opencv'])
  height, width = frames.shape[1:3]
  reason = (f'{ratio:.1f}x faster here, measured on {height}x{width} frames with {threads} '
            f'thread{"s" * (threads > 1)} a worker: TensorFlow {seconds["tf"]:.3f} s a pair (its first call '
            f'{seconds["tf_first_call"]:.1f} s), OpenCV {seconds["opencv"]:.3f} s')
  return Choice(dataclasses.replace(flow, backend=backend), reason)
