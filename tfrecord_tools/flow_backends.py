"""Optical-flow backends for the converter, chosen by name.

A backend turns the frames of one video into one flow field per frame: the flow of frame i is the motion from frame i
to frame i + 1, and the last frame repeats the flow before it, so RGB and flow sequences have equal length (one
frame index addresses both). Backends: `opencv` (OpenCV's DualTVL1 on the CPU), `tf` (the same algorithm in
TensorFlow, batched and XLA-compiled, on any device), `farneback` (OpenCV's Farneback: much faster, less accurate;
for quick experiments and tests), `none` (RGB-only records), and `auto`, the default, which `flow_choice` resolves
to `tf` or `opencv`, whichever finishes the conversion sooner on the machine, before any backend is made.

To add a backend, subclass `FlowBackend`, put its own settings in `FlowConfig`, and register a factory in
`_FACTORIES`.
"""

import abc
import contextlib
import dataclasses
import functools
import os
from typing import Callable, Dict, Iterator, Optional

import cv2
import numpy as np
import tensorflow as tf

from d3d_core import quiet_start
from d3d_core import tvl1_params
from tfrecord_tools import tvl1_tf

AUTO = 'auto'
# The TensorFlow backend's frame pairs per call when FlowConfig.batch_size is 0: a GPU needs many to be busy. On a CPU
# a batch runs until its slowest pair converges and larger fields leave the caches: one thread, 256x602 frames from
# the middle of bikes.mp4, 0.452 s a pair at batch 1, 0.676 s at 4 (`benchmarks/tvl1_cpu_settings.py`).
GPU_BATCH_SIZE = 32
CPU_BATCH_SIZE = 1


def default_compile_cache() -> str:
  """Where compiled TV-L1 programs are kept between runs: `$XDG_CACHE_HOME/d3d/xla` (default ~/.cache)."""
  cache_home = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(cache_home, 'd3d', 'xla')


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  """Which backend computes the flow, and its parameters.

  Only backend, tvl1 and use_initial_flow decide the flow (`record_settings`); the rest decides how fast it comes.
  """
  backend: str = AUTO
  tvl1: tvl1_params.Tvl1Params = tvl1_params.Tvl1Params()  # TV-L1 parameters, OpenCV's defaults
  use_initial_flow: bool = False  # TV-L1 starts each frame pair from the previous pair's flow (OpenCV useInitialFlow)
  batch_size: int = 0  # frame pairs per TensorFlow call; 0: GPU_BATCH_SIZE with a GPU, else CPU_BATCH_SIZE
  # TensorFlow pads frames to sides that are multiples of this, so that a data set of many frame sizes compiles a
  # few programs; the flow inside the frame does not change (`tvl1_tf.tvl1_flow`'s frame_sizes). 1: no padding.
  bucket_multiple: int = 32
  compile_cache: str = dataclasses.field(default_factory=default_compile_cache)  # '': compile in every run

  def __post_init__(self):
    if self.backend not in BACKEND_NAMES:
      raise ValueError(f'flow backend must be one of {BACKEND_NAMES}, got {self.backend!r}')
    if self.backend == 'tf' and self.use_initial_flow:
      raise ValueError('the tf flow backend computes the pairs of a video as one batch, so a pair cannot start from '
                       'the previous pair\'s flow: use_initial_flow needs the opencv backend')
    if self.batch_size < 0 or self.bucket_multiple < 1:
      raise ValueError(f'flow batch_size must be >= 0 (0: by device) and bucket_multiple >= 1, got '
                       f'{self.batch_size} and {self.bucket_multiple}')

  def record_settings(self) -> dict:
    """What decides the flow in the records: saved with a data set, which a resumed conversion must match."""
    return {'backend': self.backend, 'tvl1': dataclasses.asdict(self.tvl1), 'use_initial_flow': self.use_initial_flow}


class FlowBackend(abc.ABC):
  """Computes per-frame flow for a whole video; subclasses only say how consecutive frames are matched."""

  @abc.abstractmethod
  def pair_flows(self, frames: np.ndarray) -> np.ndarray:
    """uint8 RGB `[T, H, W, 3]` -> float32 `[T - 1, H, W, 2]`: pixels (x, y) from frame i to frame i + 1."""

  def video_flow(self, frames: np.ndarray) -> np.ndarray:
    """uint8 RGB `[T, H, W, 3]`, T >= 2 -> float32 `[T, H, W, 2]`; the last frame repeats the flow before it."""
    if len(frames) < 2:
      raise ValueError(f'flow needs at least 2 frames, got {len(frames)}')
    pairs = self.pair_flows(frames)
    return np.concatenate([pairs, pairs[-1:]], axis=0)


def grayscale(frames: np.ndarray) -> np.ndarray:
  """uint8 RGB `[T, H, W, 3]` -> uint8 `[T, H, W]`, with OpenCV's luma weights as TV-L1 pipelines use."""
  return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])


class OpenCVTVL1(FlowBackend):
  """OpenCV's DualTVL1 (contrib `cv2.optflow`) on grayscale frames, as MediaPipe and kinetics-i3d compute flow.

  Single-threaded use per process is intended: the drivers scale by running one backend per worker process.
  """

  def __init__(self, params: tvl1_params.Tvl1Params, use_initial_flow: bool = False):
    self._use_initial_flow = use_initial_flow
    self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(*params.opencv_args(), use_initial_flow)

  def pair_flows(self, frames):
    gray = grayscale(frames)
    flows = []
    # With useInitialFlow, calc() starts from the flow it is given: zero for the first pair, then the previous pair's.
    initial = np.zeros(gray[0].shape + (2,), np.float32) if self._use_initial_flow else None
    for first, second in zip(gray[:-1], gray[1:]):
      flow = self._tvl1.calc(first, second, initial)
      if initial is not None:
        initial = flow.copy()
      flows.append(flow)
    return np.stack(flows).astype(np.float32)


class OpenCVFarneback(FlowBackend):
  """OpenCV's Farneback flow with fixed, common settings: real flow at a small fraction of TV-L1's cost."""

  def pair_flows(self, frames):
    gray = grayscale(frames)
    return np.stack([cv2.calcOpticalFlowFarneback(first, second, None, pyr_scale=0.5, levels=3, winsize=9,
                                                  iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
                     for first, second in zip(gray[:-1], gray[1:])]).astype(np.float32)


class TensorFlowTVL1(FlowBackend):
  """`tfrecord_tools.tvl1_tf` TV-L1: all frame pairs of a video in fixed-size, XLA-compiled batches on TensorFlow's
  device, frames padded to shape buckets.

  On a CPU too XLA pays: measured 2.1x the plain graph (BUILD_NOTES.md). Each bucket compiles once per process, and
  with `compile_cache` once per machine: later processes load the program from disk.
  """

  def __init__(self, config: FlowConfig):
    with compile_cache(config.compile_cache):  # TensorFlow reads its settings when it first lists devices
      gpu = bool(tf.config.list_physical_devices('GPU'))
    # On a CPU, testing convergence after every inner iteration costs nothing and saves the masked iterations
    # (bigbuckbunny.mp4, 256x455, one thread: 0.631 s a pair against 0.689 s testing every 5).
    self._flow = tvl1_tf.TfTvl1Backend(config.tvl1, batch_size=config.batch_size or (GPU_BATCH_SIZE if gpu else
                                                                                     CPU_BATCH_SIZE),
                                       jit_compile=True, bucket_multiple=config.bucket_multiple,
                                       iterations_per_check=None if gpu else 1)
    self._buckets_seen = set()

  def pair_flows(self, frames):
    gray = grayscale(frames)
    bucket = tvl1_tf.bucket_shape(*gray.shape[1:], self._flow.bucket_multiple)
    if bucket in self._buckets_seen:
      return self._flow(gray[:-1], gray[1:])
    self._buckets_seen.add(bucket)
    # Loading a cached program, XLA prints notices about CPU features on the console (C++, past Python's logging)
    # that are not errors; a failed compile still raises.
    with quiet_start.stderr_closed():
      return self._flow(gray[:-1], gray[1:])


@contextlib.contextmanager
def compile_cache(folder: str) -> Iterator[None]:
  """Inside: XLA keeps its compiled programs in `folder` (TensorFlow's persistent cache; '' for none) for the
  processes started meanwhile, and for this one if TensorFlow reads its settings meanwhile (it does once, when it
  first lists devices). Set through TF_XLA_FLAGS, which is restored after; a cache that it names already is kept."""
  saved = os.environ.get('TF_XLA_FLAGS')
  if folder and '--tf_xla_persistent_cache_directory' not in (saved or ''):
    os.makedirs(folder, exist_ok=True)
    os.environ['TF_XLA_FLAGS'] = f'{saved or ""} --tf_xla_persistent_cache_directory={folder}'.strip()
  try:
    yield
  finally:
    if saved is None:
      os.environ.pop('TF_XLA_FLAGS', None)
    else:
      os.environ['TF_XLA_FLAGS'] = saved


_FACTORIES: Dict[str, Callable[[FlowConfig], Optional[FlowBackend]]] = {
    'opencv': lambda config: OpenCVTVL1(config.tvl1, config.use_initial_flow),
    'tf': TensorFlowTVL1,
    'farneback': lambda config: OpenCVFarneback(),
    'none': lambda config: None,
}
BACKEND_NAMES = (AUTO, *_FACTORIES)


def create_backend(config: FlowConfig) -> Optional[FlowBackend]:
  """The backend `config` names, or None for RGB-only records; `auto` must be resolved first (`flow_choice`)."""
  if config.backend == AUTO:
    raise ValueError('flow backend auto is chosen per machine: resolve it first with flow_choice.resolve')
  return _FACTORIES[config.backend](config)


@functools.lru_cache(maxsize=None)
def shared_backend(config: FlowConfig) -> Optional[FlowBackend]:
  """`create_backend(config)` made once per process: a worker keeps the programs that TensorFlow compiled from one
  video to the next, and from `flow_choice`'s measurement to the conversion."""
  return create_backend(config)
