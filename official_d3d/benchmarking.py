"""Latency of inference, and the machine it was measured on: per-call wall times move with the machine and its load,
so they are reported as a median with its spread, next to what the machine is."""

import dataclasses
import os
import platform
import statistics
import time
from typing import Callable, Dict, Mapping, Sequence, Tuple, TypeVar

import tensorflow as tf

Input = TypeVar('Input')


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall times of the timed calls of one function."""
  seconds: Tuple[float, ...]

  @property
  def median_ms(self) -> float:
    return 1000 * statistics.median(self.seconds)

  @property
  def spread_ms(self) -> float:
    """Interquartile range: how much the calls varied, unmoved by a few that another process slowed down."""
    if len(self.seconds) < 2:
      return 0.0
    first, _, third = statistics.quantiles(self.seconds, n=4, method='inclusive')
    return 1000 * (third - first)

  def summary(self, decimals: int = 2) -> Dict[str, float]:
    return {'median_ms': round(self.median_ms, decimals), 'spread_ms': round(self.spread_ms, decimals),
            'calls': len(self.seconds)}


def time_calls(functions: Mapping[str, Callable[[Input], object]], inputs: Sequence[Input],
               warmup: int = 1) -> Dict[str, Timing]:
  """Calls each function on each input and times it, the first `warmup` inputs untimed (a loaded SavedModel function
  builds its graph on its first call, XLA compiles, caches fill).

  The functions take turns on each input, so that a change of the machine's load hits them alike. A function must
  return only once its work is done (e.g. call `.numpy()` on its result): TensorFlow may run ops asynchronously.
  """
  if len(inputs) <= warmup:
    raise ValueError(f'{len(inputs)} inputs leave none to time after {warmup} warm-up calls')
  seconds = {name: [] for name in functions}
  for index, value in enumerate(inputs):
    for name, function in functions.items():
      started = time.perf_counter()
      function(value)
      if index >= warmup:
        seconds[name].append(time.perf_counter() - started)
  return {name: Timing(tuple(values)) for name, values in seconds.items()}


def machine_description() -> Dict[str, object]:
  """What timings and trained figures depend on beyond the code and the seed: the floating-point rounding of XLA's and
  oneDNN's CPU kernels follows the instruction sets they compile for, so another CPU gives other (equally valid)
  accuracies."""
  flags_line, model = '', platform.processor()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          model = value.strip()
        elif key.strip() == 'flags':
          flags_line = value
  return {'cpu': model, 'cores': os.cpu_count(), 'tensorflow': tf.__version__,
          'gpus': [device.name for device in tf.config.list_logical_devices('GPU')],
          'instruction_sets': sorted(set(flags_line.split()) & {'avx', 'avx2', 'fma', 'avx512f', 'amx_tile'}),
          'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''), 'ONEDNN_MAX_CPU_ISA': os.environ.get('ONEDNN_MAX_CPU_ISA', '')}
