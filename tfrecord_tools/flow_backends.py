"""Optical-flow backends for the converter, chosen by name.

A backend turns the frames of one video into one flow field per frame: the flow of frame i is the motion from frame i
to frame i + 1, and the last frame repeats the flow before it, so RGB and flow sequences have equal length (one
frame index addresses both). Backends: `opencv` (OpenCV's DualTVL1 on the CPU), `tf` (the same algorithm in
TensorFlow, batched and XLA-compiled, for a GPU or TPU), `farneback` (OpenCV's Farneback: much faster, less accurate;
for quick experiments and tests), `none` (RGB-only records).

To add a backend, subclass `FlowBackend`, put its own settings in `FlowConfig`, and register a factory in
`_FACTORIES`.
"""

import abc
import dataclasses
from typing import Callable, Dict, Optional

import cv2
import numpy as np
import tensorflow as tf

from d3d_core import tvl1_params
from tfrecord_tools import tvl1_tf


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  """Which backend computes the flow, and its parameters."""
  backend: str = 'opencv'
  tvl1: tvl1_params.Tvl1Params = tvl1_params.Tvl1Params()  # TV-L1 parameters, OpenCV's defaults
  use_initial_flow: bool = False  # TV-L1 starts each frame pair from the previous pair's flow (OpenCV useInitialFlow)
  batch_size: int = 32  # frame pairs per TensorFlow call (backend 'tf')

  def __post_init__(self):
    if self.backend not in BACKEND_NAMES:
      raise ValueError(f'flow backend must be one of {BACKEND_NAMES}, got {self.backend!r}')
    if self.backend == 'tf' and self.use_initial_flow:
      raise ValueError('the tf flow backend computes the pairs of a video as one batch, so a pair cannot start from '
                       'the previous pair\'s flow: use_initial_flow needs the opencv backend')


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
  """`tfrecord_tools.tvl1_tf` TV-L1: all frame pairs of a video in fixed-size batches on TensorFlow's device.

  XLA-compiled when a GPU is visible; on a CPU, compiling costs about a minute per frame size and buys little, so the
  op runs as a plain graph there.
  """

  def __init__(self, params: tvl1_params.Tvl1Params, batch_size: int):
    jit_compile = bool(tf.config.list_physical_devices('GPU'))
    self._flow = tvl1_tf.TfTvl1Backend(params, batch_size=batch_size, jit_compile=jit_compile)

  def pair_flows(self, frames):
    gray = grayscale(frames)
    return self._flow(gray[:-1], gray[1:])


_FACTORIES: Dict[str, Callable[[FlowConfig], Optional[FlowBackend]]] = {
    'opencv': lambda config: OpenCVTVL1(config.tvl1, config.use_initial_flow),
    'tf': lambda config: TensorFlowTVL1(config.tvl1, config.batch_size),
    'farneback': lambda config: OpenCVFarneback(),
    'none': lambda config: None,
}
BACKEND_NAMES = tuple(_FACTORIES)


def create_backend(config: FlowConfig) -> Optional[FlowBackend]:
  """The backend `config` names, or None for RGB-only records."""
  return _FACTORIES[config.backend](config)
