r"""Training speed of the three streams: flow teacher, RGB baseline, and D3D student with its frozen teacher.

  .venv/bin/python benchmarks/train_benchmark.py               # tiny S3D-G on CPU; full size where a GPU is found
  .venv/bin/python benchmarks/train_benchmark.py --full_size --batch_size=8   # S3D-G 64x224x224: meant for a GPU

Each case times the model's own `train_step` (the step `fit` runs), compiled as Keras compiles it: a `tf.function`,
with XLA when `jit_compile` is on. The inputs are synthetic clips held in device memory, so the input pipeline does
not limit these figures (`benchmarks/input_benchmark.py` measures it). A D3D step costs one extra forward pass of the
teacher, run in inference mode outside the gradient tape; the table gives its step time (and, robust to other
processes sharing the CPU, its CPU time) over the RGB baseline's. The teacher's weights are random: speed does not
depend on them. `--convolutions=folded,conv3d` also times the networks with Keras' own Conv3D op in place of
`FoldedConv3D`'s 2-D convolutions (same weights, same outputs), the baseline that folding is measured against.

Model FLOPs utilisation (MFU): the step's FLOPs are counted on its traced graph (`step_flops`), convolutions and
matrix products only, forward and backward (about 3x the forward pass; D3D's frozen teacher adds one forward pass),
and divided by the step time and the precision's peak (`--peak_tflops`). Both convolution ops give the same count.

Cases run in order of how many of precision, XLA and convolution differ from the first value of each flag, so that
`--time_budget_s` (no case starts after it) leaves out the furthest combinations; `--results_json` is rewritten after
every case, so a run stopped from outside keeps what it measured.
"""

import contextlib
import dataclasses
import gc
import json
import math
import os
import pathlib
import sys
import time
from typing import Dict, List, Optional, Tuple

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable from a checkout, not installed

from absl import app
from absl import flags
import keras
import tensorflow as tf

from benchmarks import table
from d3d_core import network_inputs
from official_d3d import train_lib
from official_d3d.configs import d3d_config
from official_d3d.modeling import d3d_model
from official_d3d.modeling import factory
from official_d3d.modeling import optimization
from official_d3d.modeling.layers import folded_conv3d
from official_d3d.ops import training_clips


@dataclasses.dataclass(frozen=True)
class Scale:
  """Network width, clip size and the precision and XLA settings measured by default."""
  name: str
  num_frames: int
  crop_size: int
  depth_multiplier: float
  min_depth: int
  num_classes: int
  batch_size: int
  precisions: Tuple[str, ...]
  xla: Tuple[bool, ...]


# As official_d3d/configs/experiments/tiny_cpu.flags. XLA off, as `official_d3d.train` runs on CPU: on CPU XLA compiles
# for minutes, then steps several times faster (`--xla=on,off` measures both).
TINY = Scale('tiny', num_frames=8, crop_size=32, depth_multiplier=0.1, min_depth=8, num_classes=10, batch_size=4,
             precisions=('float32',), xla=(False,))
# The published S3D-G on Kinetics-400 clips.
FULL = Scale('full', num_frames=64, crop_size=224, depth_multiplier=1.0, min_depth=16, num_classes=400, batch_size=8,
             precisions=('mixed_bfloat16', 'float32'), xla=(True, False))

# Dense (no sparsity) peaks of one NVIDIA H200 SXM, TFLOP/s: half the with-sparsity figures of NVIDIA's H200
# datasheet (nvidia.com/en-us/data-center/h200): BF16 and FP16 tensor cores 1,979, TF32 989. float32 runs on TF32:
# TensorFlow computes float32 convolutions and matrix products in TF32 on Ampere and later GPUs unless told otherwise.
H200_PEAK_TFLOPS = {'mixed_bfloat16': 989.5, 'mixed_float16': 989.5, 'float32': 494.5}

FLAGS = flags.FLAGS
XLA_VALUES = {'on': True, 'off': False}
CONVOLUTIONS = ('folded', 'conv3d')


def define_flags() -> None:
  flags.DEFINE_boolean('full_size', None, 'S3D-G at 64x224x224 (default: when TensorFlow sees a GPU), else the tiny '
                       'one.')
  flags.DEFINE_list('streams', list(d3d_config.STREAMS), 'Streams to time: flow (teacher), rgb (baseline), d3d.')
  flags.DEFINE_integer('batch_size', 0, 'Clips per step; 0: 4 tiny, 8 full size.', lower_bound=0)
  flags.DEFINE_list('precisions', None, f'Keras dtype policies, from {d3d_config.PRECISIONS}; default: float32 tiny, '
                    'mixed_bfloat16 and float32 full size.')
  flags.DEFINE_list('xla', None, 'jit_compile settings, "on" and/or "off"; default: off tiny, on and off full size.')
  flags.DEFINE_integer('num_frames', 0, 'Overrides the clip length (0: 8 tiny, 64 full size).')
  flags.DEFINE_integer('crop_size', 0, 'Overrides the clip size (0: 32 tiny, 224 full size).')
  flags.DEFINE_list('convolutions', ['folded'], 'How the 3-D convolutions run: "folded" (as 2-D ones, as the models '
                    'do) and/or "conv3d" (Keras\' Conv3D op, the baseline).')
  flags.DEFINE_integer('warmup_steps', 2, 'Untimed steps after the first (which traces and compiles).', lower_bound=0)
  flags.DEFINE_integer('steps', 20, 'Timed steps per case.', lower_bound=1)
  flags.DEFINE_list('peak_tflops', [f'{name}={tflops}' for name, tflops in H200_PEAK_TFLOPS.items()],
                    'PRECISION=TFLOPS: the dense peak that MFU is given against, per precision. Default: one NVIDIA '
                    'H200 SXM, half the with-sparsity figures of its datasheet (nvidia.com/en-us/data-center/h200): '
                    'BF16/FP16 989.5, TF32 494.5 (float32 runs on TF32 on Ampere and later); H100 SXM has the same '
                    'peaks, H200 NVL 835.5 and 417.5.')
  flags.DEFINE_float('time_budget_s', 0.0, 'Start no case after this many seconds (0: no limit); cases left are '
                     'reported as not run.', lower_bound=0.0)
  flags.DEFINE_string('results_json', '', 'Write the cases measured so far here, after each case.')


def resolve_scale() -> Scale:
  """The scale the flags ask for, with their overrides applied."""
  full_size = FLAGS.full_size if FLAGS.full_size is not None else bool(tf.config.list_physical_devices('GPU'))
  scale = FULL if full_size else TINY
  unknown = [p for p in FLAGS.precisions or () if p not in d3d_config.PRECISIONS]
  unknown += [x for x in FLAGS.xla or () if x not in XLA_VALUES]
  unknown += [s for s in FLAGS.streams if s not in d3d_config.STREAMS]
  unknown += [c for c in FLAGS.convolutions if c not in CONVOLUTIONS]
  unknown += [p for p in peak_tflops() if p not in d3d_config.PRECISIONS]
  if unknown:
    raise app.UsageError(f'unknown values {unknown} in --precisions, --xla, --streams, --convolutions or '
                         '--peak_tflops')
  return dataclasses.replace(
      scale, num_frames=FLAGS.num_frames or scale.num_frames, crop_size=FLAGS.crop_size or scale.crop_size,
      batch_size=FLAGS.batch_size or scale.batch_size,
      precisions=tuple(FLAGS.precisions) if FLAGS.precisions else scale.precisions,
      xla=tuple(XLA_VALUES[x] for x in FLAGS.xla) if FLAGS.xla else scale.xla)


def peak_tflops() -> Dict[str, float]:
  """--peak_tflops as {precision: TFLOP/s}."""
  pairs = [item.split('=') for item in FLAGS.peak_tflops]
  if any(len(pair) != 2 for pair in pairs):
    raise app.UsageError(f'--peak_tflops takes PRECISION=TFLOPS items, got {FLAGS.peak_tflops}')
  return {name: float(tflops) for name, tflops in pairs}


def experiment_config(scale: Scale, stream: str) -> d3d_config.ExperimentConfig:
  return d3d_config.ExperimentConfig(
      stream=stream,
      data=d3d_config.DataConfig(num_classes=scale.num_classes, num_frames=scale.num_frames,
                                 crop_size=scale.crop_size, global_batch_size=scale.batch_size),
      model=d3d_config.ModelConfig(depth_multiplier=scale.depth_multiplier, min_depth=scale.min_depth))


def build_model(config: d3d_config.ExperimentConfig) -> d3d_model.VideoClassifier:
  """The stream's model as training builds it; the D3D teacher is a fresh (random) flow network."""
  network = factory.build_network(config, factory.stream_modality(config.stream))
  if config.stream == 'd3d':
    teacher = factory.build_network(config, 'flow')
    model = d3d_model.D3DModel(network, teacher, config.distillation)
  else:
    model = d3d_model.VideoClassifier(network, factory.stream_modality(config.stream))
  model.compile(optimizer=optimization.build_optimizer(config.train))
  model.optimizer.build(model.trainable_variables)
  return model


def synthetic_batch(config: d3d_config.ExperimentConfig) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
  """Random clips of what the stream trains on, created once on the default device, and labels: uint8 with their
  flips and flow scales, which the step converts (`data.convert_on_accelerator`, the default), or float32 in
  [-1, 1]."""
  data = config.data
  shape = [data.global_batch_size, data.num_frames, data.crop_size, data.crop_size]
  modalities = factory.train_modalities(config.stream)
  if data.convert_on_accelerator:
    inputs = {modality: tf.random.uniform(shape + [network_inputs.MODALITIES[modality].channels], 0, 256,
                                          dtype=tf.int32, seed=index)
              for index, modality in enumerate(modalities)}
    inputs = {modality: tf.cast(clips, tf.uint8) for modality, clips in inputs.items()}
    inputs[training_clips.MIRRORED] = tf.cast(tf.range(data.global_batch_size) % 2, tf.uint8)
    if 'flow' in modalities:
      inputs[training_clips.FLOW_SCALE] = tf.ones([data.global_batch_size])
  else:
    inputs = {modality: tf.random.uniform(shape + [network_inputs.MODALITIES[modality].channels], -1.0, 1.0,
                                          seed=index)
              for index, modality in enumerate(modalities)}
  labels = tf.random.uniform([data.global_batch_size], 0, data.num_classes, dtype=tf.int32, seed=7)
  return inputs, labels


def _elements(shape: tf.TensorShape) -> int:
  return math.prod(shape.as_list())


def _flops(operation: tf.Operation) -> int:
  """Multiplies and adds (2 per multiply-add) of one convolution, convolution gradient or matrix product; 0 for
  any other op. A convolution and both its gradients each do 2 x (output elements) x (kernel elements per filter)."""
  kind = operation.type
  if kind in ('Conv2D', 'Conv3D'):
    return 2 * _elements(operation.outputs[0].shape) * _elements(operation.inputs[1].shape[:-1])
  if kind in ('Conv2DBackpropInput', 'Conv3DBackpropInputV2'):
    return 2 * _elements(operation.inputs[2].shape) * _elements(operation.inputs[1].shape[:-1])
  if kind in ('Conv2DBackpropFilter', 'Conv3DBackpropFilterV2'):
    return 2 * _elements(operation.inputs[2].shape) * _elements(operation.outputs[0].shape[:-1])
  if kind in ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3'):
    shape = operation.inputs[0].shape
    transposed = operation.get_attr('transpose_a' if kind == 'MatMul' else 'adj_x')
    return 2 * _elements(operation.outputs[0].shape) * shape[-2 if transposed else -1]
  return 0


def step_flops(function: tf.types.experimental.ConcreteFunction) -> int:
  """Model FLOPs of one call: the convolutions and matrix products of its graph, as MFU counts them (elementwise
  ops, normalisation and the optimizer's update are memory-bound and left out). Counted from static shapes, so
  the graph is traced, not run. A training step's graph holds every convolution's two gradients, the first one's
  with respect to the clips included (unused, as the usual 3x-the-forward-pass rule counts it)."""
  return sum(_flops(operation) for operation in function.graph.get_operations())


@dataclasses.dataclass
class Timing:
  first_step_seconds: float  # tracing and compilation included
  step_seconds: float
  cpu_seconds_per_step: float  # of this process, all threads: the work done, whatever else runs on the machine
  flops: int  # model FLOPs per step (`step_flops`)


def time_training(model: d3d_model.VideoClassifier, batch, jit_compile: bool) -> Timing:
  """Runs the compiled train_step: once, `--warmup_steps` more, then `--steps` timed (synchronised at both ends)."""
  step = tf.function(model.train_step, jit_compile=jit_compile)
  start = time.perf_counter()
  flops = step_flops(step.get_concrete_function(batch))  # the trace that the first call then runs
  float(step(batch)['loss'])  # reading a value waits for the device
  first_step_seconds = time.perf_counter() - start
  for _ in range(FLAGS.warmup_steps):
    float(step(batch)['loss'])
  start, start_cpu = time.perf_counter(), time.process_time()
  for _ in range(FLAGS.steps):
    logs = step(batch)
  loss = float(logs['loss'])
  elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
  if not math.isfinite(loss):
    raise FloatingPointError(f'non-finite training loss {loss}')
  return Timing(first_step_seconds, elapsed / FLAGS.steps, cpu / FLAGS.steps, flops)


@contextlib.contextmanager
def convolution_op(name: str):
  """'folded': FoldedConv3D as the models run it; 'conv3d': with Keras' Conv3D op instead, for the baseline."""
  folded_op = folded_conv3d.FoldedConv3D.convolution_op
  if name == 'conv3d':
    folded_conv3d.FoldedConv3D.convolution_op = keras.layers.Conv3D.convolution_op
  try:
    yield
  finally:
    folded_conv3d.FoldedConv3D.convolution_op = folded_op


@dataclasses.dataclass
class Case:
  stream: str
  precision: str
  jit_compile: bool
  convolution: str
  timing: Optional[Timing] = None  # None: failed or not run, see `error`
  error: str = ''

  def mfu(self, peaks: Dict[str, float]) -> Optional[float]:
    """Model FLOPs utilisation against the precision's peak, when both are known."""
    if not self.timing or self.precision not in peaks:
      return None
    return self.timing.flops / self.timing.step_seconds / (peaks[self.precision] * 1e12)


def run_case(scale: Scale, stream: str, precision: str, jit_compile: bool, convolution: str) -> Case:
  """Times one case; a TensorFlow error (out of memory, a kernel or compilation failing) is named in the case, so
  that the other cases still run."""
  config = experiment_config(scale, stream)
  case = Case(stream, precision, jit_compile, convolution)
  try:
    with train_lib.precision_policy(precision), convolution_op(convolution):
      model = build_model(config)
      case.timing = time_training(model, synthetic_batch(config), jit_compile)
  except tf.errors.ResourceExhaustedError:
    case.error = 'out of memory'
  except tf.errors.OpError as error:
    case.error = f'{type(error).__name__}: {error.message.splitlines()[0][:200]}'
  finally:
    keras.backend.clear_session()
    gc.collect()
  return case


def ordered_settings(scale: Scale) -> List[Tuple[str, bool, str, str]]:
  """(precision, jit_compile, convolution, stream) of every case, those closest to the first precision, XLA and
  convolution setting first: a time budget then cuts the combinations, not a whole comparison."""
  settings = [(precision, jit_compile, convolution, stream) for precision in scale.precisions
              for jit_compile in scale.xla for convolution in FLAGS.convolutions for stream in FLAGS.streams]
  first = (scale.precisions[0], scale.xla[0], FLAGS.convolutions[0])
  return sorted(settings, key=lambda setting: sum(value != start for value, start in zip(setting, first)))


def case_summary(scale: Scale, case: Case, peaks: Dict[str, float]) -> Dict[str, object]:
  """One case as `--results_json` writes it."""
  summary = {'stream': case.stream, 'precision': case.precision, 'xla': case.jit_compile,
             'convolution': case.convolution, 'batch_size': scale.batch_size,
             'clip': [scale.num_frames, scale.crop_size, scale.crop_size], 'error': case.error,
             'peak_tflops': peaks.get(case.precision), 'mfu': case.mfu(peaks)}
  if case.timing:
    summary.update(first_step_seconds=case.timing.first_step_seconds, step_seconds=case.timing.step_seconds,
                   clips_per_second=scale.batch_size / case.timing.step_seconds, flops_per_step=case.timing.flops)
  return summary


def _ratio(numerator: Optional[Case], denominator: Optional[Case], field: str = 'step_seconds') -> str:
  """A `Timing` field of `numerator` over that of `denominator`, when both were measured."""
  if not (numerator and numerator.timing and denominator and denominator.timing):
    return ''
  return f'{getattr(numerator.timing, field) / getattr(denominator.timing, field):.2f}'


def _xla_name(jit_compile: bool) -> str:
  return 'on' if jit_compile else 'off'


def _mfu_percent(case: Case, peaks: Dict[str, float]) -> str:
  mfu = case.mfu(peaks)
  return '' if mfu is None else f'{100 * mfu:.1f}'


def report(scale: Scale, cases: List[Case], peaks: Dict[str, float]) -> str:
  """The speed and MFU of every case, and the speed-ups of bfloat16, XLA and folding where both sides were
  measured."""
  by_key = {(c.stream, c.precision, c.jit_compile, c.convolution): c for c in cases}
  rows = []
  for case in cases:
    timing = case.timing
    cells = ([f'{timing.first_step_seconds:.1f}', f'{timing.step_seconds * 1e3:.1f}',
              f'{timing.cpu_seconds_per_step * 1e3:.0f}', f'{1 / timing.step_seconds:.2f}',
              f'{scale.batch_size / timing.step_seconds:.1f}', f'{timing.flops / 1e9:.2f}', _mfu_percent(case, peaks)]
             if timing else [case.error, '', '', '', '', '', ''])
    rgb = by_key.get(('rgb', case.precision, case.jit_compile, case.convolution))
    rows.append([case.stream, case.precision, _xla_name(case.jit_compile), case.convolution, *cells,
                 _ratio(case, rgb), _ratio(case, rgb, 'cpu_seconds_per_step')])
  text = table.format_table(['stream', 'precision', 'XLA', 'convolution', 'first step s', 'step ms', 'CPU ms/step',
                             'steps/s', 'clips/s', 'GFLOP/step', 'MFU %', 'step time / rgb', 'CPU time / rgb'], rows)

  speedups = []
  streams = sorted({c.stream for c in cases}, key=d3d_config.STREAMS.index)
  for stream in streams:
    for convolution in FLAGS.convolutions:
      for jit_compile in scale.xla:
        speedups.append([stream, f'float32 / mixed_bfloat16, XLA {_xla_name(jit_compile)}, {convolution}',
                         _ratio(by_key.get((stream, 'float32', jit_compile, convolution)),
                                by_key.get((stream, 'mixed_bfloat16', jit_compile, convolution)))])
      for precision in scale.precisions:
        speedups.append([stream, f'XLA off / on, {precision}, {convolution}',
                         _ratio(by_key.get((stream, precision, False, convolution)),
                                by_key.get((stream, precision, True, convolution)))])
    for precision in scale.precisions:
      for jit_compile in scale.xla:
        speedups.append([stream, f'conv3d / folded, {precision}, XLA {_xla_name(jit_compile)}',
                         _ratio(by_key.get((stream, precision, jit_compile, 'conv3d')),
                                by_key.get((stream, precision, jit_compile, 'folded')))])
  speedups = [row for row in speedups if row[-1]]
  if speedups:
    text += ('\n\nSpeed-ups (step time over step time):\n' +
             table.format_table(['stream', 'comparison', 'speed-up'], speedups))
  return text


def main(argv):
  del argv
  tf.get_logger().setLevel('ERROR')  # each case traces a new train_step: retracing warnings say nothing here
  started = time.perf_counter()
  scale = resolve_scale()
  peaks = peak_tflops()
  devices = tf.config.list_physical_devices('GPU') or tf.config.list_physical_devices('CPU')
  device_names = [tf.config.experimental.get_device_details(d).get('device_name', d.name) for d in devices]
  print(f'TensorFlow {tf.__version__}, Keras {keras.__version__}; device {", ".join(device_names)}; '
        f'{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} (1 min) at start')
  print(f'{scale.name} S3D-G (depth multiplier {scale.depth_multiplier}, {scale.num_classes} classes), clips '
        f'{scale.num_frames}x{scale.crop_size}x{scale.crop_size}, batch {scale.batch_size}, SGD; synthetic in-memory '
        f'clips (no input pipeline); {FLAGS.steps} timed steps after {FLAGS.warmup_steps + 1} untimed; MFU against '
        f'peaks of {peaks} TFLOP/s', flush=True)
  cases = []
  for precision, jit_compile, convolution, stream in ordered_settings(scale):
    case = Case(stream, precision, jit_compile, convolution, error='not run (time budget)')
    if not FLAGS.time_budget_s or time.perf_counter() - started < FLAGS.time_budget_s:
      case = run_case(scale, stream, precision, jit_compile, convolution)
    cases.append(case)
    timing = case.timing
    measured = timing and (f'{timing.step_seconds * 1e3:.1f} ms/step, {scale.batch_size / timing.step_seconds:.1f} '
                           f'clips/s, {timing.flops / 1e9:.2f} GFLOP/step, MFU {_mfu_percent(case, peaks)} %, '
                           f'first step {timing.first_step_seconds:.1f} s')
    print(f'  {stream} {precision} XLA {_xla_name(jit_compile)} {convolution}: {case.error or measured}', flush=True)
    if FLAGS.results_json:
      with open(FLAGS.results_json, 'w') as f:
        json.dump([case_summary(scale, c, peaks) for c in cases], f, indent=1)
  print(f'\nTraining speed; load average {os.getloadavg()[0]:.2f} (1 min) at the end\n')
  print(report(scale, cases, peaks))


if __name__ == '__main__':
  define_flags()
  app.run(main)
