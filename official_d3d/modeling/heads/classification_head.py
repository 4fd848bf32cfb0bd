"""The classifier on top of a video backbone: TF-slim S3D-G's `Logits` scope, for any backbone's last feature map."""

import keras
from keras import ops

from official_d3d.modeling.layers import folded_conv3d
from official_d3d.modeling.layers import regularizers

_PACKAGE = 'official_d3d'

# The reference's average pool over (frames, height, width): 64 x 224 x 224 clips reach Mixed_5c as 8 x 7 x 7.
POOL_SIZE = (2, 7, 7)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassificationHead(keras.layers.Layer):
  """[2, 7, 7] VALID average pool, dropout, 1x1x1 convolution with bias, mean over the remaining positions.

  The pool shrinks to the feature map when the input is small (as the reference's `reduced_kernel_size_3d`).
  Returns float32 `logits` and `features`: the pooled features averaged over the remaining positions, before dropout,
  the vector the logits are an affine map of at inference (the pooled target for feature distillation).
  """

  def __init__(self, num_classes: int, dropout_rate: float = 0.2, weight_decay: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if num_classes < 1:
      raise ValueError(f'num_classes must be positive, got {num_classes}')
    self.num_classes = num_classes
    self.dropout_rate = dropout_rate
    self.weight_decay = weight_decay
    self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy, name='Dropout_0b')
    self.classifier = folded_conv3d.FoldedConv3D(
        num_classes, 1, kernel_regularizer=regularizers.slim_l2(weight_decay), dtype=self.dtype_policy,
        name='Conv2d_0c_1x1')

  def build(self, input_shape):
    self.classifier.build(input_shape)

  def call(self, inputs, training=None):
    # Static sizes where known; an unknown size is assumed large enough, as in the reference.
    pool_size = tuple(limit if size is None else min(size, limit) for size, limit in zip(inputs.shape[1:4], POOL_SIZE))
    pooled = ops.average_pool(inputs, pool_size, strides=1, padding='valid')
    logits = self.classifier(self.dropout(pooled, training=training))
    return {'logits': ops.cast(ops.mean(logits, axis=(1, 2, 3)), 'float32'),
            'features': ops.cast(ops.mean(pooled, axis=(1, 2, 3)), 'float32')}

  def compute_output_shape(self, input_shape):
    return {'logits': (input_shape[0], self.num_classes), 'features': (input_shape[0], input_shape[-1])}

  def get_config(self):
    return {**super().get_config(), 'num_classes': self.num_classes, 'dropout_rate': self.dropout_rate,
            'weight_decay': self.weight_decay}
