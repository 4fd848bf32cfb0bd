"""Optical-flow backends for the converter, chosen by name.

A backend turns the frames of one video into one flow field per frame: the flow of frame i is the motion from frame i
to frame i + 1, and the last frame repeats the flow before it, so RGB and flow sequences have equal length
(DESIGN.md). The `none` backend writes RGB-only records.

To add a backend (for example the batched TensorFlow TV-L1 of `official_d3d.ops.optical_flow`), subclass
`FlowBackend`, put its own settings (such as a batch size) in `FlowConfig`, and register a factory in `_FACTORIES`.
"""

import abc
import dataclasses
from typing import Callable, Dict, Optional

import cv2
import numpy as np


def _param(default, help_text):
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class TVL1Params:
  """Every parameter of TV-L1 (Zach, Pock, Bischof 2007), named as OpenCV's DualTVL1; defaults are OpenCV's.

  Each field's help text is the help of its `--tvl1_<name>` flag.
  """
  tau: float = _param(0.25, 'time step of the numerical scheme')
  lambda_: float = _param(0.15, 'weight of the data term: smaller gives smoother flow')
  theta: float = _param(0.3, 'tightness of the coupling between the two sub-problems')
  nscales: int = _param(5, 'pyramid levels')
  warps: int = _param(5, 'warpings per pyramid level')
  epsilon: float = _param(0.01, 'stopping threshold of the inner loop')
  inner_iterations: int = _param(30, 'iterations of the inner loop')
  outer_iterations: int = _param(10, 'iterations of the outer loop')
  scale_step: float = _param(0.8, 'pyramid downscaling factor, in (0, 1)')
  gamma: float = _param(0.0, 'weight of the illumination-change term (0: none)')
  median_filtering: int = _param(5, 'median filter kernel size applied to the flow between warps')
  use_initial_flow: bool = _param(False, 'start each frame pair from the flow of the previous pair')

  def __post_init__(self):
    if not 0 < self.scale_step < 1:
      raise ValueError(f'TV-L1 scale_step must be in (0, 1), got {self.scale_step}')
    for name in ('nscales', 'warps', 'inner_iterations', 'outer_iterations'):
      if getattr(self, name) < 1:
        raise ValueError(f'TV-L1 {name} must be at least 1, got {getattr(self, name)}')


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  """Which backend computes the flow, and its parameters."""
  backend: str = 'opencv'
  tvl1: TVL1Params = TVL1Params()

  def __post_init__(self):
    if self.backend not in BACKEND_NAMES:
      raise ValueError(f'flow backend must be one of {BACKEND_NAMES}, got {self.backend!r}')


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


class OpenCVTVL1(FlowBackend):
  """OpenCV's DualTVL1 (contrib `cv2.optflow`) on grayscale frames, as MediaPipe and kinetics-i3d compute flow.

  Single-threaded use per process is intended: the drivers scale by running one backend per worker process.
  """

  def __init__(self, params: TVL1Params):
    self._params = params
    self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
        params.tau, params.lambda_, params.theta, params.nscales, params.warps, params.epsilon,
        params.inner_iterations, params.outer_iterations, params.scale_step, params.gamma, params.median_filtering,
        params.use_initial_flow)

  def pair_flows(self, frames):
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    flows = []
    # With useInitialFlow, calc() starts from the flow it is given: zero for the first pair, then the previous pair's.
    initial = np.zeros(gray[0].shape + (2,), np.float32) if self._params.use_initial_flow else None
    for first, second in zip(gray[:-1], gray[1:]):
      flow = self._tvl1.calc(first, second, initial)
      if initial is not None:
        initial = flow.copy()
      flows.append(flow)
    return np.stack(flows).astype(np.float32)


_FACTORIES: Dict[str, Callable[[FlowConfig], Optional[FlowBackend]]] = {
    'opencv': lambda config: OpenCVTVL1(config.tvl1),
    'none': lambda config: None,
}
BACKEND_NAMES = tuple(_FACTORIES)


def create_backend(config: FlowConfig) -> Optional[FlowBackend]:
  """The backend `config` names, or None for RGB-only records."""
  return _FACTORIES[config.backend](config)
