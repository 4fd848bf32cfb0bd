"""Experiment configuration: plain dataclasses, filled in by flags and saved next to the checkpoints.

`ExperimentConfig` is the whole description of a run. `train.py` resolves it from flags, writes it to
`<model_dir>/config.json`, and a resumed run, an evaluation or an export reads it back from there.
"""

import dataclasses
import json
import os
from typing import List, Tuple

import tensorflow as tf

STREAMS = ('flow', 'rgb', 'd3d')
DISTILL_TARGETS = ('logits', 'features')
DISTILL_LOSSES = ('l2', 'kl')
OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('cosine', 'step', 'constant')
STRATEGIES = ('one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')

CONFIG_FILENAME = 'config.json'


@dataclasses.dataclass
class DataConfig:
  """Input pipeline: which records, how clips are sampled and augmented."""
  train_pattern: str = ''  # glob of training TFRecord shards
  eval_pattern: str = ''  # glob of evaluation TFRecord shards
  label_map: str = ''  # label map written by tfrecord_tools (one class per line)
  num_classes: int = 0  # 0: the number of lines of label_map
  num_frames: int = 64  # frames per clip
  stride: int = 1  # temporal stride between sampled frames
  crop_size: int = 224
  # Training scale jitter: the short side is resized to a random size in this range before the random crop.
  train_resize_range: Tuple[int, int] = (256, 256)
  eval_resize: int = 256  # short side before the centre crop at evaluation
  random_flip: bool = True
  global_batch_size: int = 8
  eval_batch_size: int = 8
  num_eval_clips: int = 1  # evenly spaced clips per video at evaluation
  num_eval_crops: int = 1  # 1: centre crop; 3: left/centre/right (or top/centre/bottom) crops
  shuffle_buffer: int = 64
  seed: int = 0


@dataclasses.dataclass
class ModelConfig:
  """S3D-G backbone (REFERENCE.md section 2); the defaults are the published network."""
  first_temporal_kernel_size: int = 3  # 3 as the TF-slim reference, 7 as the papers
  temporal_conv_startat: str = 'Conv2d_2c_3x3'  # earlier blocks use 2D [1, k, k] convolutions
  gating_startat: str = 'Conv2d_2c_3x3'  # '' for no gating (S3D)
  depth_multiplier: float = 1.0
  min_depth: int = 16
  dropout_rate: float = 0.2  # the reference keeps 0.8


@dataclasses.dataclass
class DistillationConfig:
  """How the RGB student is taught by the frozen flow teacher (stream 'd3d' only)."""
  target: str = 'logits'  # teacher output the student mimics: 'logits' or pooled 'features'
  loss: str = 'l2'  # 'l2' (mean squared error) or 'kl' (temperature-scaled KL on logits)
  weight: float = 1.0  # lambda in loss = cross-entropy + lambda * distillation
  temperature: float = 1.0  # for 'kl'
  use_head: bool = False  # a small head on the student's features predicts the target


@dataclasses.dataclass
class TrainConfig:
  """Optimisation, schedule, checkpoints, devices and precision."""
  optimizer: str = 'sgd'
  learning_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 1e-7
  schedule: str = 'cosine'
  warmup_steps: int = 0
  step_boundaries: Tuple[int, ...] = ()  # for 'step': learning rate x decay_rate at each boundary
  decay_rate: float = 0.1
  label_smoothing: float = 0.0
  train_steps: int = 1000  # a multiple of steps_per_loop
  steps_per_loop: int = 100  # steps between checkpoints and summaries
  eval_interval: int = 0  # train_and_eval: steps between evaluations during training (0: only at the end)
  eval_steps: int = 0  # batches per evaluation; 0: the whole evaluation set
  distribution_strategy: str = 'one_device'
  tpu_address: str = ''
  mixed_precision: str = 'float32'
  jit_compile: bool = True  # XLA on GPU; ignored on CPU (slow to compile) and TPU (always compiled)
  max_checkpoints: int = 3


@dataclasses.dataclass
class ExperimentConfig:
  """One run: which network is trained ('flow' teacher, 'rgb' baseline or 'd3d' student) and how."""
  stream: str = 'd3d'
  model_dir: str = ''
  teacher_checkpoint: str = ''  # model_dir (or checkpoint path) of a trained flow teacher; required for 'd3d'
  # model_dir (or checkpoint path) of a trained network to start from, e.g. Kinetics-400 before UCF-101; weights
  # whose shapes differ (the classifier, for another class count) start fresh.
  init_checkpoint: str = ''
  # Evaluation only: the model_dir of a flow network to late-fuse with this RGB (or D3D) network.
  fusion_model_dir: str = ''
  fusion_flow_weight: float = 0.5  # two-stream probabilities = (1 - w) x RGB + w x flow
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  distillation: DistillationConfig = dataclasses.field(default_factory=DistillationConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

  def validate(self):
    """Raises ValueError naming the first inconsistent setting."""
    choices = [('stream', self.stream, STREAMS),
               ('distillation.target', self.distillation.target, DISTILL_TARGETS),
               ('distillation.loss', self.distillation.loss, DISTILL_LOSSES),
               ('train.optimizer', self.train.optimizer, OPTIMIZERS),
               ('train.schedule', self.train.schedule, SCHEDULES),
               ('train.distribution_strategy', self.train.distribution_strategy, STRATEGIES),
               ('train.mixed_precision', self.train.mixed_precision, PRECISIONS)]
    for name, value, allowed in choices:
      if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}')
    if self.distillation.loss == 'kl' and self.distillation.target != 'logits':
      raise ValueError('distillation.loss=kl compares class distributions: it needs distillation.target=logits')
    if self.data.num_frames < 1 or self.data.stride < 1:
      raise ValueError('data.num_frames and data.stride must be positive')
    train = self.train
    if train.steps_per_loop < 1 or train.train_steps < 1 or train.train_steps % train.steps_per_loop:
      raise ValueError(f'train.train_steps={train.train_steps} must be a positive multiple of '
                       f'train.steps_per_loop={train.steps_per_loop}')
    if train.eval_interval < 0 or train.eval_interval % train.steps_per_loop:
      raise ValueError(f'train.eval_interval={train.eval_interval} must be a multiple of '
                       f'train.steps_per_loop={train.steps_per_loop}')
    if not 0.0 <= self.fusion_flow_weight <= 1.0:
      raise ValueError(f'fusion_flow_weight must be in [0, 1], got {self.fusion_flow_weight}')
    return self


def _from_dict(cls, values):
  """Builds dataclass `cls` from a (nested) dict, rejecting unknown keys so typos in saved configs surface."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(values) - set(fields)
  if unknown:
    raise ValueError(f'unknown {cls.__name__} keys: {sorted(unknown)}')
  kwargs = {}
  for name, value in values.items():
    default = getattr(cls(), name)
    if dataclasses.is_dataclass(default):
      value = _from_dict(type(default), value)
    elif isinstance(default, tuple):
      value = tuple(value)
    kwargs[name] = value
  return cls(**kwargs)


def to_dict(config: ExperimentConfig) -> dict:
  return dataclasses.asdict(config)


def from_dict(values: dict) -> ExperimentConfig:
  return _from_dict(ExperimentConfig, values)


def differences(config: ExperimentConfig, other: ExperimentConfig) -> List[str]:
  """Dotted names of the settings that differ, e.g. ['data.num_frames', 'train.learning_rate']."""
  def flatten(values, prefix=''):
    flat = {}
    for name, value in values.items():
      if isinstance(value, dict):
        flat.update(flatten(value, f'{prefix}{name}.'))
      else:
        flat[prefix + name] = value
    return flat
  mine, theirs = flatten(to_dict(config)), flatten(to_dict(other))
  return sorted(name for name in mine if mine[name] != theirs[name])


def save(config: ExperimentConfig, model_dir: str) -> str:
  """Writes `<model_dir>/config.json` (any file system TensorFlow knows, gs:// included)."""
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, CONFIG_FILENAME)
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(to_dict(config), f, indent=2, sort_keys=True)
  return path


def load(model_dir: str) -> ExperimentConfig:
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} not found: is {model_dir} the model_dir of a training run?')
  with tf.io.gfile.GFile(path) as f:
    return from_dict(json.load(f))
