"""TV-L1 optical-flow parameters: OpenCV's defaults, written here only.

Both TV-L1 implementations (OpenCV's, and TensorFlow's in `tfrecord_tools.tvl1_tf`) and the converter's `--tvl1_*`
flags take their parameters and defaults from `Tvl1Params`.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Tvl1Params:
  """OpenCV's DualTVL1 parameters with OpenCV's defaults (`cv2.optflow.DualTVL1OpticalFlow_create`)."""
  tau: float = 0.25
  lambda_: float = 0.15
  theta: float = 0.3
  nscales: int = 5
  warps: int = 5
  epsilon: float = 0.01
  inner_iterations: int = 30
  outer_iterations: int = 10
  scale_step: float = 0.8
  gamma: float = 0.0
  median_filtering: int = 5

  def __post_init__(self):
    for name in ('tau', 'lambda_', 'theta'):
      if getattr(self, name) <= 0:
        raise ValueError(f'TV-L1 parameter {name} must be positive, got {getattr(self, name)}')
    for name in ('nscales', 'warps', 'inner_iterations', 'outer_iterations'):
      if getattr(self, name) < 1:
        raise ValueError(f'TV-L1 parameter {name} must be at least 1, got {getattr(self, name)}')
    if self.epsilon < 0:
      raise ValueError(f'TV-L1 parameter epsilon must not be negative, got {self.epsilon}')
    if not 0 < self.scale_step < 1:
      raise ValueError(f'TV-L1 parameter scale_step must be in (0, 1), got {self.scale_step}')
    if self.median_filtering > 1 and self.median_filtering % 2 == 0:
      raise ValueError(f'TV-L1 parameter median_filtering must be odd (or <= 1 for none), got {self.median_filtering}')

  def opencv_args(self):
    """Positional arguments of `cv2.optflow.DualTVL1OpticalFlow_create` for the same parameters."""
    return (self.tau, self.lambda_, self.theta, self.nscales, self.warps, self.epsilon, self.inner_iterations,
            self.outer_iterations, self.scale_step, self.gamma, self.median_filtering)
