"""A video classification network: a backbone's endpoints, and a classification head on its last one.

This is the network that is trained, distilled, checkpointed and exported. Its outputs are a dict: `logits` and
`features` (float32, from the head) and every backbone endpoint by name (`Conv2d_1a_7x7` ... `Mixed_5c` for S3D-G),
so distillation or a probe can read any layer without rebuilding the network.
"""

from typing import Tuple

import keras

from official_d3d.modeling.heads import classification_head

_PACKAGE = 'official_d3d'


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VideoClassificationNetwork(keras.Model):
  """`backbone` (a model returning `{endpoint: feature map}`, last endpoint last) + a `ClassificationHead` named
  `Logits`, as in the TF-slim graphs. `endpoint_names`: the backbone's endpoints, input side first."""

  def __init__(self, backbone: keras.Model, num_classes: int, dropout_rate: float = 0.2, weight_decay: float = 0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.num_classes = num_classes
    self.dropout_rate = dropout_rate
    self.weight_decay = weight_decay
    self.endpoint_names: Tuple[str, ...] = tuple(backbone.compute_output_shape((None,) * 4 + (self.input_channels,)))
    self.head = classification_head.ClassificationHead(num_classes, dropout_rate, weight_decay,
                                                       dtype=self.dtype_policy, name='Logits')

  @property
  def input_channels(self) -> int:
    return self.backbone.input_channels

  def build(self, input_shape):
    if not self.backbone.built:
      self.backbone.build(input_shape)
    shapes = self.backbone.compute_output_shape((None, None, None, None, input_shape[-1]))
    self.head.build(shapes[self.endpoint_names[-1]])

  def call(self, inputs, training=None):
    endpoints = self.backbone(inputs, training=training)
    return {**self.head(endpoints[self.endpoint_names[-1]], training=training), **endpoints}

  def compute_output_shape(self, input_shape):
    shapes = self.backbone.compute_output_shape(input_shape)
    return {**self.head.compute_output_shape(shapes[self.endpoint_names[-1]]), **shapes}

  def get_config(self):
    return {**super().get_config(), 'backbone': keras.saving.serialize_keras_object(self.backbone),
            'num_classes': self.num_classes, 'dropout_rate': self.dropout_rate, 'weight_decay': self.weight_decay}

  @classmethod
  def from_config(cls, config):
    return cls(**{**config, 'backbone': keras.saving.deserialize_keras_object(config['backbone'])})
