"""Optimizer and learning-rate schedule of a run, built from `TrainConfig`.

Weight decay is the optimizer's own (Keras 3 `weight_decay`: each step `w -= lr * weight_decay * w`). With plain SGD
that is the gradient of the TF-slim reference's L2 regulariser `weight_decay * |w|^2 / 2`. As in the reference, only
convolution and dense kernels decay: biases and batch-norm offsets are excluded.
"""

import keras
import tensorflow as tf

from official_d3d.configs import d3d_config

# Substrings of the variable names that weight decay leaves alone.
NO_DECAY_VARIABLES = ('bias', 'beta', 'gamma')


@keras.saving.register_keras_serializable(package='official_d3d')
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
  """Rises linearly from 0 to `after_warmup(warmup_steps)` over `warmup_steps`, then follows `after_warmup`.

  Large-batch SGD from scratch diverges without it; `after_warmup` sees the global step, so a step schedule's
  boundaries mean the same thing with or without warmup.
  """

  def __init__(self, after_warmup, warmup_steps: int):
    super().__init__()
    self.after_warmup = after_warmup
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    target = tf.cast(self.after_warmup(step), tf.float32)
    if not self.warmup_steps:
      return target
    warmup_steps = tf.cast(self.warmup_steps, tf.float32)
    warmup_rate = tf.cast(self.after_warmup(warmup_steps), tf.float32) * step / warmup_steps
    return tf.where(step < warmup_steps, warmup_rate, target)

  def get_config(self):
    return {'after_warmup': keras.saving.serialize_keras_object(self.after_warmup),
            'warmup_steps': self.warmup_steps}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['after_warmup'] = keras.saving.deserialize_keras_object(config['after_warmup'])
    return cls(**config)


@keras.saving.register_keras_serializable(package='official_d3d')
class ConstantRate(keras.optimizers.schedules.LearningRateSchedule):
  """A constant learning rate, as a schedule so that warmup can wrap it."""

  def __init__(self, learning_rate: float):
    super().__init__()
    self.learning_rate = learning_rate

  def __call__(self, step):
    del step  # Constant.
    return tf.constant(self.learning_rate, tf.float32)

  def get_config(self):
    return {'learning_rate': self.learning_rate}


@keras.saving.register_keras_serializable(package='official_d3d')
class ShiftedSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """`schedule(step - offset)`, clamped at step 0: a decay that starts after the warmup."""

  def __init__(self, schedule, offset: int):
    super().__init__()
    self.schedule = schedule
    self.offset = offset

  def __call__(self, step):
    return self.schedule(tf.maximum(tf.cast(step, tf.float32) - self.offset, 0.0))

  def get_config(self):
    return {'schedule': keras.saving.serialize_keras_object(self.schedule), 'offset': self.offset}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['schedule'] = keras.saving.deserialize_keras_object(config['schedule'])
    return cls(**config)


def _cosine(train_config: d3d_config.TrainConfig):
  decay_steps = max(train_config.train_steps - train_config.warmup_steps, 1)
  # Shifted so that the cosine starts where the warmup ends.
  return ShiftedSchedule(keras.optimizers.schedules.CosineDecay(train_config.learning_rate, decay_steps),
                         train_config.warmup_steps)


def _step(train_config: d3d_config.TrainConfig):
  boundaries = list(train_config.step_boundaries)
  if boundaries != sorted(boundaries) or any(b <= 0 for b in boundaries):
    raise ValueError(f'train.step_boundaries must be positive and increasing, got {boundaries}')
  if not boundaries:
    raise ValueError('train.schedule=step needs train.step_boundaries (e.g. 60000,70000)')
  values = [train_config.learning_rate * train_config.decay_rate**i for i in range(len(boundaries) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


# The implementations of `d3d_config.SCHEDULES` and `d3d_config.OPTIMIZERS`, which the config checks.
SCHEDULES = {'cosine': _cosine, 'step': _step, 'constant': lambda train_config: ConstantRate(train_config.learning_rate)}
OPTIMIZERS = {
    'sgd': lambda train_config, learning_rate: keras.optimizers.SGD(
        learning_rate, momentum=train_config.momentum, weight_decay=train_config.weight_decay or None),
    'adamw': lambda train_config, learning_rate: keras.optimizers.AdamW(
        learning_rate, weight_decay=train_config.weight_decay),
}


def build_learning_rate(train_config: d3d_config.TrainConfig) -> keras.optimizers.schedules.LearningRateSchedule:
  """Cosine (to 0 at `train_steps`), step (x `decay_rate` at each boundary) or constant, after linear warmup."""
  return LinearWarmup(SCHEDULES[train_config.schedule](train_config), train_config.warmup_steps)


def build_optimizer(train_config: d3d_config.TrainConfig) -> keras.optimizers.Optimizer:
  """SGD with momentum (the S3D recipe) or AdamW, both with decoupled weight decay, on the configured schedule."""
  optimizer = OPTIMIZERS[train_config.optimizer](train_config, build_learning_rate(train_config))
  optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_VARIABLES))
  return optimizer
