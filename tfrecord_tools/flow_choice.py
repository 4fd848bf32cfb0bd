"""`--flow_backend=auto`: TensorFlow's TV-L1 or OpenCV's, whichever computes this data set's flow sooner here.

The choice is measured, not guessed. TensorFlow's TV-L1 (XLA, shape buckets) is the faster one on a GPU and, on the
CPUs measured so far, per core too (BUILD_NOTES.md, "Conversion at the fastest backend's speed"); on tiny frames its
per-call cost can lose. So two of the conversion's worker processes time the two backends at once, on frame pairs
from the middle of the first readable video; the measurement overlaps the other workers' start-up, and the worker that
timed TensorFlow keeps its compiled program. From those rates, the first video's length and the number of videos, the
conversion estimates each backend's time for one worker's share, TensorFlow's first call (its compile, or the load of
a cached program) included, and takes TensorFlow only where it saves clearly more than the measurement's noise
(`_TENSORFLOW_MARGIN`, `_MIN_SECONDS_SAVED`): OpenCV is the reference implementation, and the same command on the same
machine should take the same backend, and so write the same records, every time.

A resumed conversion, or another split converted into the same folder with the same settings, takes the backend the
data set holds already, without measuring again: one data set, one implementation's flow.
"""

import dataclasses
import multiprocessing
import multiprocessing.pool
import time
from typing import Callable, Optional, Sequence, Tuple

import cv2

from d3d_core import quiet_start
from d3d_core import video_reader
from tfrecord_tools import flow_backends
from tfrecord_tools import manifests

_VIDEOS_TRIED = 5  # unreadable videos skipped before giving up measuring
# Frames decoded to find the middle of a video: an opening is often still, and TV-L1 converges faster on still frames.
_FRAMES_SEARCHED = 250
_PAIRS = 2  # frame pairs timed by each backend, after its first call
# Tiny frames take milliseconds a pair: they are timed over repeated calls.
_MIN_TIMED_SECONDS = 0.5
# TensorFlow replaces OpenCV only where its estimate for a worker's share is this much shorter, and by this many
# seconds. On the demo's 40x40 frames the two rates moved between 0.6x and 1.7x of each other from run to run (the
# machine's load), so a ratio alone took either backend; a small conversion gains too little to be worth the doubt.
_TENSORFLOW_MARGIN = 1.1
_MIN_SECONDS_SAVED = 60.0


@dataclasses.dataclass(frozen=True)
class Choice:
  """The resolved flow settings, and one line that says why."""
  flow: flow_backends.FlowConfig
  reason: str


def set_worker_threads(threads: int) -> None:
  """A conversion worker's share of the cores: one OpenCV thread (worker processes are what scales) and `threads`
  TensorFlow threads (XLA's included), without oversubscription. Once TensorFlow's runtime has started its threads can
  no longer change, and they are left as they are."""
  cv2.setNumThreads(1)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError:
    pass


def _seconds_per_pair(flow: flow_backends.FlowConfig, backend_name: str, frames) -> Tuple[float, float]:
  """In a worker: a backend's first call on one pair (TensorFlow's compile or the load of a cached program), then its
  steady seconds per pair over `frames`' pairs, repeated for at least `_MIN_TIMED_SECONDS`. The worker keeps the
  backend for the conversion (`shared_backend`)."""
  backend = flow_backends.shared_backend(dataclasses.replace(flow, backend=backend_name))
  started = time.perf_counter()
  backend.pair_flows(frames[:2])
  first_call = time.perf_counter() - started
  pairs = 0
  started = time.perf_counter()
  while not pairs or time.perf_counter() - started < _MIN_TIMED_SECONDS:
    backend.pair_flows(frames)
    pairs += len(frames) - 1
  return first_call, (time.perf_counter() - started) / pairs


def _sample_frames(entries: Sequence[manifests.VideoEntry], decode: video_reader.DecodeConfig, num_frames: int):
  """(`num_frames` frames from the middle of the first video, among the first few, that is readable and has that
  many, the number of frame pairs it has, counted up to `_FRAMES_SEARCHED` frames); or None."""
  decode = dataclasses.replace(decode, max_frames=min(decode.max_frames or _FRAMES_SEARCHED, _FRAMES_SEARCHED))
  for entry in entries[:_VIDEOS_TRIED]:
    try:
      frames = video_reader.read_video(entry.path, decode, entry.start, entry.end).frames
    except video_reader.VideoDecodeError:
      continue
    if len(frames) >= num_frames:
      middle = (len(frames) - num_frames) // 2
      return frames[middle:middle + num_frames], len(frames) - 1
  return None


def measure(flow: flow_backends.FlowConfig, frames, threads: int,
            pool: Optional[multiprocessing.pool.Pool] = None) -> dict:
  """Both backends' seconds per pair, timed at once in two processes set up as the conversion's workers: `pool`'s
  (the conversion's own, whose start-up this overlaps and which keep TensorFlow's program), or two started for it.

  Processes, not this one: TensorFlow's threads can only be set before its runtime starts. At once: the cores are
  shared as during the conversion, and the wait is the slower measurement's, not the sum.
  """
  if pool is None:
    context = multiprocessing.get_context('spawn')
    initializer, initargs = quiet_start.quiet_initializer(set_worker_threads, threads)
    with flow_backends.compile_cache(flow.compile_cache):  # later workers will load what these compile
      own_pool = context.Pool(2, initializer=initializer, initargs=initargs)
    with own_pool:
      return measure(flow, frames, threads, own_pool)
  tensorflow, opencv = (pool.apply_async(_seconds_per_pair, (flow, name, frames)) for name in ('tf', 'opencv'))
  (tf_first_call, tf_seconds), (_, opencv_seconds) = tensorflow.get(), opencv.get()
  return {'tf': tf_seconds, 'tf_first_call': tf_first_call, 'opencv': opencv_seconds}


def resolve(flow: flow_backends.FlowConfig, entries: Sequence[manifests.VideoEntry],
            decode: video_reader.DecodeConfig, threads: int, num_workers: int = 1,
            earlier: Optional[Tuple[str, str]] = None,
            workers: Optional[Callable[[], multiprocessing.pool.Pool]] = None) -> Choice:
  """`flow` with `auto` replaced by a backend, measured on `entries`' first readable video with `threads` TensorFlow
  threads per worker, for `entries` shared over `num_workers` workers; other backends are kept. `earlier`: (backend,
  why) that the data set already holds, kept. `workers`: starts (or returns) the conversion's worker processes, where
  `measure` then runs."""
  if flow.backend != flow_backends.AUTO:
    return Choice(flow, f'--flow_backend={flow.backend}')
  if earlier:
    return Choice(dataclasses.replace(flow, backend=earlier[0]), earlier[1])
  if flow.use_initial_flow:
    return Choice(dataclasses.replace(flow, backend='opencv'),
                  'use_initial_flow needs OpenCV: TensorFlow computes a video\'s pairs together')
  sample = _sample_frames(entries, decode, _PAIRS + 1)
  if sample is None:
    return Choice(dataclasses.replace(flow, backend='opencv'), f'none of the first {_VIDEOS_TRIED} videos could be '
                  'read to measure the backends')
  frames, pairs_per_video = sample
  seconds = measure(flow, frames, threads, workers and workers())
  pairs = -(-len(entries) // num_workers) * pairs_per_video
  tensorflow, opencv = seconds['tf_first_call'] + pairs * seconds['tf'], pairs * seconds['opencv']
  height, width = frames.shape[1:3]
  estimate = (f'for about {pairs} pairs a worker TensorFlow {tensorflow:.0f} s, OpenCV {opencv:.0f} s; measured on '
              f'{height}x{width} frames with {threads} thread{"s" * (threads > 1)} a worker: TensorFlow '
              f'{seconds["tf"]:.3f} s a pair (its first call {seconds["tf_first_call"]:.1f} s), OpenCV '
              f'{seconds["opencv"]:.3f} s')
  speedup = opencv / tensorflow
  if speedup >= _TENSORFLOW_MARGIN and opencv - tensorflow >= _MIN_SECONDS_SAVED:
    return Choice(dataclasses.replace(flow, backend='tf'), f'{speedup:.1f}x faster here: {estimate}')
  why = (f'TensorFlow would save {opencv - tensorflow:.0f} s a worker ({speedup:.2f}x), under the '
         f'{_MIN_SECONDS_SAVED:.0f} s and {_TENSORFLOW_MARGIN}x that it takes to replace the reference implementation'
         if speedup >= 1 else f'{1 / speedup:.1f}x faster here')
  return Choice(dataclasses.replace(flow, backend='opencv'), f'{why}: {estimate}')
