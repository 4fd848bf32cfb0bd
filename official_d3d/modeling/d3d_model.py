"""Keras task models that train and evaluate video networks: one stream, and the D3D student.

`VideoClassifier` owns the one training step: cross-entropy on one modality, plus whatever `auxiliary_losses` a
subclass adds. `D3DModel` adds distillation from a frozen flow teacher, from its logits, its pooled features or any
backbone endpoint. Every model evaluates on RGB (or its own modality) alone, averaging the softmax over the views of
a video (two-stream fusion is `official_d3d.evaluation`'s). Both save as `.keras` files, networks included.

Distributed training: per-example losses are averaged over the *global* batch (`tf.nn.compute_average_loss`), so the
gradients that tf.distribute sums across replicas are those of the global-batch mean. Mixed precision: losses are
computed in float32, and the loss is scaled by `optimizer.scale_loss` (a no-op except under `mixed_float16`, where
`compile` wraps the optimizer in a `LossScaleOptimizer` that unscales the gradients and skips non-finite steps).

Default distillation (`DistillationConfig`): L2 between the student's and the teacher's logits, weight 1, no head.
The paper tunes the student "to predict the outputs of the temporal stream", and its released D3D checkpoint loads
into the plain S3D-G graph: the student's own logits regress onto the teacher's, so no extra layer exists at
inference. The alternatives (pooled features as target, temperature KL, a distillation head) are options.
"""

import dataclasses
from typing import Dict, Optional

import keras
import tensorflow as tf

from official_d3d import evaluation
from official_d3d.configs import d3d_config
from official_d3d.ops import training_clips

_PACKAGE = 'official_d3d'


def select_modality(inputs, modality: str) -> tf.Tensor:
  """The clips of one modality from a feature dict (or the clips themselves)."""
  if isinstance(inputs, dict):
    if modality not in inputs:
      raise ValueError(f'the model reads {modality!r} clips, but the input only has {sorted(inputs)}')
    return inputs[modality]
  return inputs


def _output_size(network, output: str) -> int:
  """Channels of a network's output ('logits', 'features' or an endpoint)."""
  shapes = network.compute_output_shape((None, None, None, None, network.input_channels))
  if output not in shapes:
    raise ValueError(f'distillation.target must be one of the network\'s outputs {tuple(shapes)}, got {output!r}')
  return shapes[output][-1]


def _l2(prediction, target, temperature):
  del temperature  # a squared error has none
  return tf.reduce_mean(tf.reshape(tf.square(prediction - target), [tf.shape(prediction)[0], -1]), axis=-1)


def _kl(prediction, target, temperature):
  teacher_log_probs = tf.nn.log_softmax(target / temperature)
  student_log_probs = tf.nn.log_softmax(prediction / temperature)
  kl = tf.reduce_sum(tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
  # T^2 keeps the gradient magnitude independent of the temperature (Hinton et al. 2015).
  return kl * temperature**2


# The implementations of `d3d_config.DISTILL_LOSSES`, which the config checks.
DISTILLATION_LOSSES = {'l2': _l2, 'kl': _kl}


def distillation_loss(prediction, target, loss: str, temperature: float) -> tf.Tensor:
  """`[B]` distillation losses: 'l2', the mean squared error over all but the batch axis (a vector or a feature
  map), or 'kl', T^2 x KL(teacher || student) at temperature T."""
  return DISTILLATION_LOSSES[loss](prediction, target, temperature)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VideoClassifier(keras.Model):
  """Trains `network` on one modality with cross-entropy; evaluates on multi-view clips.

  Training batches may come as the input pipeline's uint8 clips (`data.convert_on_accelerator`): the training step
  converts them first, RGB to the network's `pixel_range` (`d3d_config.PIXEL_RANGES`).

  Logs `loss`, `cls_loss`, `top_1`, `top_5` in training and `loss` (cross-entropy of the video-level
  probabilities), `top_1`, `top_5` in evaluation. `predict` returns video probabilities and labels.
  """

  def __init__(self, network: keras.Model, modality: str = 'rgb', label_smoothing: float = 0.0,
               pixel_range: str = d3d_config.DEFAULT_PIXEL_RANGE, **kwargs):
    super().__init__(**kwargs)
    self.network = network
    self.modality = modality
    self.label_smoothing = label_smoothing
    self.pixel_range = pixel_range
    self.loss_tracker = keras.metrics.Mean(name='loss')
    self.cls_loss_tracker = keras.metrics.Mean(name='cls_loss')
    self.top_1 = evaluation.TopKAccuracy(k=1)
    self.top_5 = evaluation.TopKAccuracy(k=5)
    self.built = network.built  # no weights of its own: built with its network, e.g. for `save` before `fit`

  @property
  def metrics(self):
    return [self.loss_tracker, self.cls_loss_tracker, self.top_1, self.top_5]

  def call(self, inputs, training=False):
    return self.network(select_modality(inputs, self.modality), training=training)

  @property
  def auxiliary_trackers(self) -> Dict[str, keras.metrics.Mean]:
    """Metrics of the `auxiliary_losses`, by the same names."""
    return {}

  def training_targets(self, inputs) -> Optional[tf.Tensor]:
    """What the auxiliary losses compare the network with, computed before (outside) the gradient tape."""
    del inputs  # A plain classifier has no targets beyond its labels.
    return None

  def auxiliary_losses(self, outputs, targets) -> Dict[str, tf.Tensor]:
    """Weighted per-example losses `[B]` added to the cross-entropy, by log name; none for a plain classifier."""
    del outputs, targets  # A plain classifier has none.
    return {}

  def _cross_entropy(self, labels, logits) -> tf.Tensor:
    num_classes = tf.shape(logits)[-1]
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    return keras.losses.categorical_crossentropy(
        one_hot, tf.cast(logits, tf.float32), from_logits=True, label_smoothing=self.label_smoothing)

  def train_step(self, data):
    inputs, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    inputs = training_clips.to_network_inputs(inputs, d3d_config.PIXEL_RANGES[self.pixel_range])
    targets = self.training_targets(inputs)
    with tf.GradientTape() as tape:
      outputs = self(inputs, training=True)
      cls_loss = self._cross_entropy(labels, outputs['logits'])
      auxiliary = self.auxiliary_losses(outputs, targets)
      per_example_loss = tf.add_n([cls_loss] + list(auxiliary.values()))
      loss = tf.nn.compute_average_loss(per_example_loss)  # Divides by the global batch size.
      if self.losses:  # Regularisers of the layers, if any: summed once across replicas.
        loss += tf.nn.scale_regularization_loss(tf.add_n([tf.cast(l, tf.float32) for l in self.losses]))
      scaled_loss = self.optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, self.trainable_variables)
    self.optimizer.apply(gradients, self.trainable_variables)

    self.loss_tracker.update_state(per_example_loss)
    self.cls_loss_tracker.update_state(cls_loss)
    for name, values in auxiliary.items():
      self.auxiliary_trackers[name].update_state(values)
    self.top_1.update_state(labels, outputs['logits'])
    self.top_5.update_state(labels, outputs['logits'])
    return {m.name: m.result() for m in self.metrics}

  def video_probabilities(self, inputs) -> tf.Tensor:
    """float32 `[B, K]`: the softmax averaged over each video's views."""
    return evaluation.multi_view_probabilities(self.network, select_modality(inputs, self.modality))

  def test_step(self, data):
    inputs, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    probabilities = self.video_probabilities(inputs)
    labels = tf.cast(labels, tf.int32)
    label_probability = tf.gather(probabilities, labels, axis=1, batch_dims=1)
    self.loss_tracker.update_state(-tf.math.log(tf.maximum(label_probability, keras.config.epsilon())))
    self.top_1.update_state(labels, probabilities)
    self.top_5.update_state(labels, probabilities)
    return {m.name: m.result() for m in (self.loss_tracker, self.top_1, self.top_5)}

  def prediction_outputs(self, inputs) -> Dict[str, tf.Tensor]:
    """What `predict` returns for each video besides its label: at least 'probabilities'."""
    return {'probabilities': self.video_probabilities(inputs)}

  def predict_step(self, data):
    inputs, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    outputs = self.prediction_outputs(inputs)
    if labels is not None:
      outputs['labels'] = labels
    return outputs

  def get_config(self):
    return {**super().get_config(), 'network': keras.saving.serialize_keras_object(self.network),
            'modality': self.modality, 'label_smoothing': self.label_smoothing, 'pixel_range': self.pixel_range}

  @classmethod
  def from_config(cls, config):
    return cls(**{**config, 'network': keras.saving.deserialize_keras_object(config['network'])})


@keras.saving.register_keras_serializable(package=_PACKAGE)
class D3DModel(VideoClassifier):
  """The D3D student (`network`, on RGB) trained with cross-entropy + weight x distillation from a frozen teacher.

  The teacher runs on flow in inference mode (batch norm uses its moving statistics) outside the gradient tape, so
  it neither trains nor costs backward memory. It is frozen here, before `compile` captures the trainable set.
  With `use_head`, a linear layer predicts the target from the student's pooled features (target logits or
  features) or, for a feature map, from the student's map at each position (a 1x1x1 convolution, the adaptor of
  FitNets): the student's own features then only need to hold the teacher's, and keep what the teacher cannot see
  (without it, mimicking a colour-blind flow network's Mixed_3c made a student lose colours). It is training-only
  and not part of the exported network. `start_step` / `ramp_steps` delay the distillation and `end_step`
  ends it (see `distillation_weight`).
  """

  def __init__(self, student: keras.Model, teacher: keras.Model, distillation: d3d_config.DistillationConfig,
               label_smoothing: float = 0.0, pixel_range: str = d3d_config.DEFAULT_PIXEL_RANGE, **kwargs):
    super().__init__(student, modality='rgb', label_smoothing=label_smoothing, pixel_range=pixel_range, **kwargs)
    if distillation.loss == 'kl' and distillation.target != 'logits':
      raise ValueError('distillation.loss=kl compares class distributions: it needs distillation.target=logits')
    self.teacher = teacher
    self.teacher.trainable = False
    self.distillation = distillation
    self.distill_loss_tracker = keras.metrics.Mean(name='distill_loss')

    teacher_size = _output_size(teacher, distillation.target)
    student_size = _output_size(student, distillation.target)
    self.head = None
    if distillation.use_head:
      self.head = keras.layers.Dense(teacher_size, dtype='float32', name='distillation_head')
      self.head.build((None, _output_size(student, self._head_input)))
    elif student_size != teacher_size:
      raise ValueError(f'the student\'s {distillation.target} have {student_size} values and the teacher\'s '
                       f'{teacher_size}: set distillation.use_head=true to map one onto the other')

  @property
  def _head_input(self) -> str:
    """The student output the head reads: pooled features for a vector target, the same map for a feature map."""
    target = self.distillation.target
    return 'features' if target in d3d_config.DISTILL_TARGETS else target

  @property
  def metrics(self):
    return super().metrics + [self.distill_loss_tracker]

  @property
  def auxiliary_trackers(self):
    return {'distill_loss': self.distill_loss_tracker}

  def training_targets(self, inputs):
    """The teacher's logits or features on the flow clips, float32, with no gradient."""
    outputs = self.teacher(select_modality(inputs, 'flow'), training=False)
    return tf.stop_gradient(tf.cast(outputs[self.distillation.target], tf.float32))

  def distillation_weight(self) -> tf.Tensor:
    """lambda at the current step: 0 before `start_step`, then growing linearly to `weight` over `ramp_steps`, and 0
    again from `end_step` (when set)."""
    config = self.distillation
    if not config.start_step and not config.ramp_steps and not config.end_step:
      return tf.constant(config.weight, tf.float32)
    step = tf.cast(self.optimizer.iterations, tf.float32)
    steps_since_start = step - float(config.start_step)
    if config.ramp_steps:
      progress = tf.clip_by_value(steps_since_start / float(config.ramp_steps), 0.0, 1.0)
    else:
      progress = tf.cast(steps_since_start >= 0.0, tf.float32)
    if config.end_step:
      progress *= tf.cast(step < float(config.end_step), tf.float32)
    return config.weight * progress

  def auxiliary_losses(self, outputs, targets):
    config = self.distillation
    if self.head is not None:
      prediction = self.head(tf.cast(outputs[self._head_input], tf.float32))
    else:
      prediction = outputs[config.target]
    distill_loss = distillation_loss(tf.cast(prediction, tf.float32), targets, config.loss, config.temperature)
    return {'distill_loss': self.distillation_weight() * distill_loss}

  def get_config(self):
    config = {name: value for name, value in super().get_config().items() if name not in ('network', 'modality')}
    return {**config, 'student': keras.saving.serialize_keras_object(self.network),
            'teacher': keras.saving.serialize_keras_object(self.teacher),
            'distillation': dataclasses.asdict(self.distillation)}

  @classmethod
  def from_config(cls, config):
    return cls(**{**config, 'student': keras.saving.deserialize_keras_object(config['student']),
                  'teacher': keras.saving.deserialize_keras_object(config['teacher']),
                  'distillation': d3d_config.DistillationConfig(**config['distillation'])})
