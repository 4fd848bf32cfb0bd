"""Experiment configuration: plain dataclasses, filled in by flags and saved next to the checkpoints.

`ExperimentConfig` is the whole description of a run. `train.py` fills it from flags (`config_flags`), `train_lib`
resolves it and writes it to `<model_dir>/config.json`, and a resumed run, an evaluation or an export reads it back
from there. Each field carries its documentation and whether a resumed run may change it (`setting`).
"""

import dataclasses
import json
import os
from typing import List, Tuple

import tensorflow as tf

from d3d_core import json_files

STREAMS = ('flow', 'rgb', 'd3d')
DISTILL_TARGETS = ('logits', 'features')  # the head's outputs; any backbone endpoint (e.g. Mixed_4f) also works
DISTILL_LOSSES = ('l2', 'kl')
FUSIONS = ('logits', 'probabilities')
OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('cosine', 'step', 'constant')
STRATEGIES = ('one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')
# What uint8 RGB 0 and 255 become at a network's input. TF-slim and Model Garden train on [-1, 1]; the authors'
# helper for their released D3D / S3D-G checkpoints feeds image / 255 (BUILD_NOTES.md, "Pixel range").
PIXEL_RANGES = {'minus_one_to_one': (-1.0, 1.0), 'zero_to_one': (0.0, 1.0)}
DEFAULT_PIXEL_RANGE = 'minus_one_to_one'

CONFIG_FILENAME = 'config.json'


class ConfigError(ValueError):
  """Settings that cannot work, or that disagree with the run already in a model_dir: the user's to fix, so the
  command lines print the message alone, without a traceback."""


def setting(default, help_text: str, resumable: bool = False):
  """A config field with its documentation (the help of its flag); `resumable`: a resumed run may change it (where
  and how it evaluates, the hardware it runs on), unlike what defines the network and its training."""
  return dataclasses.field(default=default, metadata={'help': help_text, 'resumable': resumable})


@dataclasses.dataclass
class DataConfig:
  """Input pipeline: which records, how clips are sampled and augmented."""
  train_pattern: str = setting('', 'Glob of the training TFRecord shards.')
  eval_pattern: str = setting('', 'Glob of the evaluation TFRecord shards.', resumable=True)
  label_map: str = setting('', 'Label map written by tfrecord_tools (one class per line).')
  num_classes: int = setting(0, 'Number of classes; 0: the number of lines of label_map.')
  num_frames: int = setting(64, 'Frames per clip.')
  stride: int = setting(1, 'Temporal stride between the sampled frames.')
  crop_size: int = setting(224, 'Side of the square crop the network sees.')
  train_resize_range: Tuple[int, int] = setting(
      (256, 256), 'Training scale jitter: the short side is resized to a random size in this range before the '
      'random crop.')
  eval_resize: int = setting(256, 'Short side before the centre crop at evaluation.', resumable=True)
  random_flip: bool = setting(True, 'Random horizontal flips in training (the flow\'s x component is negated).')
  global_batch_size: int = setting(8, 'Training clips per step, over all replicas.')
  eval_batch_size: int = setting(8, 'Videos per evaluation batch, over all replicas.', resumable=True)
  num_eval_clips: int = setting(1, 'Evenly spaced clips per video at evaluation.', resumable=True)
  num_eval_crops: int = setting(1, 'Crops per clip at evaluation: 1 centre; more: spread along the long side.',
                                resumable=True)
  shuffle_buffer: int = setting(64, 'Training examples in the shuffle buffer.')
  seed: int = setting(0, 'Seed of the input pipeline\'s shuffling and augmentation.')
  deterministic: bool = setting(False, 'Training clips in the same order on every run with the same seed (reproducible '
                                'comparisons); off, parallel reads and decodes deliver whichever is ready first.')
  convert_on_accelerator: bool = setting(
      True, 'Training clips leave the input pipeline as uint8 with each clip\'s flip and flow scale, and the training '
      'step converts them to float32 on the accelerator: a quarter of the bytes to batch and copy, no float work on '
      'the CPU (windows resized by scale jitter are rounded to uint8 levels). Off: the pipeline converts; nothing to '
      'gain when training on the CPU, whose cores do the conversion either way.', resumable=True)
  tf_data_service: str = setting('', 'Address (host:port) of a tf.data service dispatcher whose workers read and '
                                 'decode the training clips (python -m official_d3d.data_service); empty: this '
                                 'process does.', resumable=True)

  def check_resize(self, training: bool) -> None:
    """Raises ConfigError unless frames resized for training (train_resize_range) or evaluation (eval_resize) leave
    room for a crop_size crop: the one check of it, for the input pipelines and the export."""
    if training and self.train_resize_range[0] > self.train_resize_range[1]:
      raise ConfigError(f'data.train_resize_range must be (min, max), got {self.train_resize_range}')
    name = 'train_resize_range' if training else 'eval_resize'
    short_side = self.train_resize_range[0] if training else self.eval_resize
    if short_side < self.crop_size:
      raise ConfigError(f'data.{name}={getattr(self, name)} resizes frames to a short side of {short_side}, smaller '
                        f'than data.crop_size={self.crop_size}')


@dataclasses.dataclass
class ModelConfig:
  """S3D-G backbone (TF-slim's nets/s3dg.py options); the defaults are the published network."""
  first_temporal_kernel_size: int = setting(3, 'Temporal size of the first convolution: 3 as the TF-slim '
                                            'reference, 7 as the papers.')
  temporal_conv_startat: str = setting('Conv2d_2c_3x3', 'First block with temporal convolutions; earlier blocks use '
                                       '2D [1, k, k] ones (the top-heavy variants). Empty: none.')
  gating_startat: str = setting('Conv2d_2c_3x3', 'First block with self-gating; empty for none (S3D).')
  depth_multiplier: float = setting(1.0, 'Scales every layer\'s channels (small models for tests and laptops).')
  min_depth: int = setting(16, 'Fewest channels a layer keeps under depth_multiplier.')
  dropout_rate: float = setting(0.2, 'Dropout before the classifier (the reference keeps 0.8).')
  batch_norm_momentum: float = setting(0.999, 'Batch-norm moving-average momentum: 0.999 as the reference, for '
                                       'long runs; short runs need less (e.g. 0.9) for usable inference statistics.')
  pixel_range: str = setting('', 'What RGB 0..255 becomes at the network\'s input: minus_one_to_one or zero_to_one '
                             '(the authors\' released checkpoints). Empty: the run being resumed or evaluated keeps '
                             'its own, a run from init_checkpoint takes that network\'s, any other minus_one_to_one.')


@dataclasses.dataclass
class DistillationConfig:
  """How the RGB student is taught by the frozen flow teacher (stream 'd3d' only)."""
  target: str = setting('logits', 'Teacher output the student mimics: logits, pooled features, or a backbone '
                        'endpoint\'s feature map (Conv2d_1a_7x7 ... Mixed_5c).')
  loss: str = setting('l2', 'l2 (mean squared error) or kl (temperature-scaled KL divergence of the logits).')
  weight: float = setting(1.0, 'lambda in loss = cross-entropy + lambda x distillation.')
  temperature: float = setting(1.0, 'Softmax temperature of the kl loss.')
  use_head: bool = setting(False, 'A linear head predicts the target (training only): from the student\'s pooled '
                           'features for logits or features, from its own map at each position (a 1x1x1 '
                           'convolution) for an endpoint.')
  start_step: int = setting(0, 'Step from which the distillation loss counts; before it the student learns from the '
                            'labels alone (a student that cannot see motion yet only gets noise from the teacher).')
  ramp_steps: int = setting(0, 'Steps over which the weight then grows linearly from 0 to weight; 0: all at once.')
  end_step: int = setting(0, 'Step from which the distillation loss no longer counts (0: never); the last steps then '
                          'learn from the labels alone, which restores what the teacher cannot see (e.g. colours).')


@dataclasses.dataclass
class TrainConfig:
  """Optimisation, schedule, checkpoints, devices and precision."""
  optimizer: str = setting('sgd', 'sgd (with momentum) or adamw.')
  learning_rate: float = setting(0.1, 'Peak learning rate, reached after the warmup.')
  momentum: float = setting(0.9, 'SGD momentum.')
  weight_decay: float = setting(1e-7, 'Decoupled weight decay of the optimizer (not on biases and batch norm).')
  schedule: str = setting('cosine', 'Learning-rate schedule after the warmup: cosine, step or constant.')
  warmup_steps: int = setting(0, 'Steps of linear warmup from 0 to learning_rate.')
  step_boundaries: Tuple[int, ...] = setting((), 'For the step schedule: the learning rate is multiplied by '
                                             'decay_rate at each of these steps.')
  decay_rate: float = setting(0.1, 'Factor of the step schedule.')
  label_smoothing: float = setting(0.0, 'Label smoothing of the cross-entropy.')
  train_steps: int = setting(1000, 'Training steps in all; a multiple of steps_per_loop.')
  steps_per_loop: int = setting(100, 'Steps between checkpoints and summaries.')
  eval_interval: int = setting(0, 'train_and_eval: steps between evaluations during training (0: only at the end).',
                               resumable=True)
  eval_steps: int = setting(0, 'Batches per evaluation; 0: the whole evaluation set.', resumable=True)
  distribution_strategy: str = setting('one_device', 'one_device, mirrored, multi_worker_mirrored or tpu.',
                                       resumable=True)
  tpu_address: str = setting('', 'TPU name or address for the tpu strategy.', resumable=True)
  mixed_precision: str = setting('float32', 'float32, mixed_bfloat16, or mixed_float16 (loss scaling; GPU only).')
  jit_compile: bool = setting(True, 'XLA-compile the train and eval steps, on any device (TPU steps are compiled '
                              'anyway). On CPU it pays for long runs: the first step compiles for tens of seconds.',
                              resumable=True)
  max_checkpoints: int = setting(3, 'Checkpoints kept in model_dir.', resumable=True)


@dataclasses.dataclass
class ExperimentConfig:
  """One run: which network is trained ('flow' teacher, 'rgb' baseline or 'd3d' student) and how."""
  stream: str = setting('d3d', 'Network to train: flow (teacher), rgb (baseline) or d3d (distilled student).')
  model_dir: str = setting('', 'Folder of the checkpoints, config.json, summaries and metrics.', resumable=True)
  teacher_checkpoint: str = setting('', 'model_dir (or checkpoint) of a trained flow teacher; required for d3d.')
  init_checkpoint: str = setting('', 'model_dir (or checkpoint) of a trained network to start from, e.g. '
                                 'Kinetics-400 before UCF-101; weights whose shapes differ (the classifier) start '
                                 'fresh.')
  fusion_model_dir: str = setting('', 'Evaluation: model_dir of a flow network to late-fuse with this RGB or D3D '
                                  'network (two-stream).', resumable=True)
  fusion_flow_weight: float = setting(0.5, 'Two-stream weights: 1 - w for RGB, w for flow.', resumable=True)
  fusion: str = setting('logits', 'Two-stream late fusion: logits (softmax of the weighted mean of each stream\'s '
                        'log-probabilities, as I3D sums logits) or probabilities (their weighted mean).',
                        resumable=True)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  distillation: DistillationConfig = dataclasses.field(default_factory=DistillationConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

  def validate(self):
    """Raises ConfigError naming the first inconsistent setting."""
    choices = [('stream', self.stream, STREAMS),
               ('distillation.loss', self.distillation.loss, DISTILL_LOSSES),
               ('fusion', self.fusion, FUSIONS),
               ('train.optimizer', self.train.optimizer, OPTIMIZERS),
               ('train.schedule', self.train.schedule, SCHEDULES),
               ('train.distribution_strategy', self.train.distribution_strategy, STRATEGIES),
               ('train.mixed_precision', self.train.mixed_precision, PRECISIONS)]
    choices.append(('model.pixel_range', self.model.pixel_range, ('', *PIXEL_RANGES)))
    for name, value, allowed in choices:
      if value not in allowed:
        raise ConfigError(f'{name} must be one of {allowed}, got {value!r}')
    if self.distillation.loss == 'kl' and self.distillation.target != 'logits':
      raise ConfigError('distillation.loss=kl compares class distributions: it needs distillation.target=logits')
    distillation = self.distillation
    if distillation.start_step < 0 or distillation.ramp_steps < 0 or distillation.end_step < 0:
      raise ConfigError('distillation.start_step, ramp_steps and end_step must be >= 0')
    if distillation.end_step and distillation.end_step <= distillation.start_step:
      raise ConfigError(f'distillation.end_step={distillation.end_step} must come after distillation.start_step='
                        f'{distillation.start_step} (or be 0: distil to the end)')
    positive = {'data.num_frames': self.data.num_frames, 'data.stride': self.data.stride,
                'data.crop_size': self.data.crop_size, 'data.global_batch_size': self.data.global_batch_size,
                'data.eval_batch_size': self.data.eval_batch_size}
    for name, value in positive.items():
      if value < 1:
        raise ConfigError(f'{name} must be positive, got {value}')
    if self.data.tf_data_service and self.data.deterministic:
      raise ConfigError('data.deterministic cannot hold with data.tf_data_service: the service\'s workers deliver '
                        'clips in the order they finish them')
    train = self.train
    if train.steps_per_loop < 1 or train.train_steps < 1 or train.train_steps % train.steps_per_loop:
      raise ConfigError(
          f'train.train_steps={train.train_steps} must be a positive multiple of '
          f'train.steps_per_loop={train.steps_per_loop}')
    if train.eval_interval < 0 or train.eval_interval % train.steps_per_loop:
      raise ConfigError(
          f'train.eval_interval={train.eval_interval} must be a multiple of '
          f'train.steps_per_loop={train.steps_per_loop}')
    if not 0.0 <= self.fusion_flow_weight <= 1.0:
      raise ConfigError(f'fusion_flow_weight must be in [0, 1], got {self.fusion_flow_weight}')
    return self


def resumable_settings() -> List[str]:
  """Dotted names of the settings a resumed run may change, e.g. 'data.eval_pattern'."""
  names = []
  for field in dataclasses.fields(ExperimentConfig):
    default = getattr(ExperimentConfig(), field.name)
    if dataclasses.is_dataclass(default):
      names += [f'{field.name}.{leaf.name}' for leaf in dataclasses.fields(default) if leaf.metadata['resumable']]
    elif field.metadata['resumable']:
      names.append(field.name)
  return names


def _from_dict(cls, values):
  """Builds dataclass `cls` from a (nested) dict, rejecting unknown keys so typos in saved configs surface."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(values) - set(fields)
  if unknown:
    raise ConfigError(f'unknown {cls.__name__} keys: {sorted(unknown)}')
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
  json_files.write_json(path, to_dict(config))
  return path


def load(model_dir: str) -> ExperimentConfig:
  """The config a run saved; runs from before `model.pixel_range` existed trained on [-1, 1], and say so."""
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} not found: is {model_dir} the model_dir of a training run?')
  try:
    values = json_files.read_json(path)
  except json.JSONDecodeError as error:
    raise ConfigError(f'{path} is not a valid config ({error}): restore it, or use a new model_dir') from None
  values.get('model', {}).setdefault('pixel_range', DEFAULT_PIXEL_RANGE)
  return from_dict(values)
