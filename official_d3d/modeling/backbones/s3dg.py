"""The S3D-G backbone (Xie et al. 2018, arXiv 1712.04851) in Keras 3, layer for layer as the TF-slim reference graph.

The architecture and its options follow tensorflow/models research/slim/nets/s3dg.py up to its last block, Mixed_5c;
the classifier on top is `official_d3d.modeling.heads.classification_head`. Keras layer names repeat the TF-slim
scopes, so a weight's path reads like its checkpoint name: `.../Mixed_4b/Branch_1/Conv2d_0b_3x3/temporal/kernel` is
`InceptionV1/Mixed_4b/Branch_1/Conv2d_0b_3x3/temporal/weights` (`official_d3d.tools.import_slim_checkpoint` holds
that mapping). The backbone takes `[batch, frames, height, width, channels]` and returns every endpoint, by the
slim graph's names, as a dict: distillation or a probe reads any of them.
"""

from typing import Dict, Optional, Sequence, Tuple

import keras
from keras import ops
import numpy as np

from official_d3d.modeling.layers import folded_conv3d
from official_d3d.modeling.layers import regularizers

# Blocks in network order. Those from Conv2d_2c_3x3 on can start the temporal convolutions or the self-gating.
ENDPOINTS = ('Conv2d_1a_7x7', 'MaxPool_2a_3x3', 'Conv2d_2b_1x1', 'Conv2d_2c_3x3', 'MaxPool_3a_3x3', 'Mixed_3b',
             'Mixed_3c', 'MaxPool_4a_3x3', 'Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f', 'MaxPool_5a_2x2',
             'Mixed_5b', 'Mixed_5c')
STARTAT_BLOCKS = ('Conv2d_2c_3x3', 'Mixed_3b', 'Mixed_3c', 'Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f',
                  'Mixed_5b', 'Mixed_5c')

# Channels of each Inception block: Branch_0 1x1, Branch_1 1x1 -> 3x3, Branch_2 1x1 -> 3x3, Branch_3 pool -> 1x1.
MIXED_BLOCK_DEPTHS = {
    'Mixed_3b': (64, 96, 128, 16, 32, 32),
    'Mixed_3c': (128, 128, 192, 32, 96, 64),
    'Mixed_4b': (192, 96, 208, 16, 48, 64),
    'Mixed_4c': (160, 112, 224, 24, 64, 64),
    'Mixed_4d': (128, 128, 256, 24, 64, 64),
    'Mixed_4e': (112, 144, 288, 32, 64, 64),
    'Mixed_4f': (256, 160, 320, 32, 128, 128),
    'Mixed_5b': (256, 160, 320, 32, 128, 128),
    'Mixed_5c': (384, 192, 384, 48, 128, 128),
}
# Max-pools between blocks: (kernel, strides); TF 'SAME' padding.
MAX_POOLS = {
    'MaxPool_2a_3x3': ((1, 3, 3), (1, 2, 2)),
    'MaxPool_3a_3x3': ((1, 3, 3), (1, 2, 2)),
    'MaxPool_4a_3x3': ((3, 3, 3), (2, 2, 2)),
    'MaxPool_5a_2x2': ((2, 2, 2), (2, 2, 2)),
}
FIRST_TEMPORAL_KERNEL_SIZES = (1, 3, 5, 7)

BATCH_NORM_MOMENTUM = 0.999
BATCH_NORM_EPSILON = 0.001
CONV_INIT_STDDEV = 0.01

_PACKAGE = 'official_d3d'


def _triple(value) -> Tuple[int, int, int]:
  return (value,) * 3 if isinstance(value, int) else tuple(value)


def _conv_initializer():
  return keras.initializers.TruncatedNormal(stddev=CONV_INIT_STDDEV)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TemporalIdentity(keras.initializers.Initializer):
  """Kernel [t, 1, 1, c, c] that passes each channel's centre frame through: the temporal conv starts as identity.

  The reference calls this critical for convergence of separable 3D networks.
  """

  def __call__(self, shape, dtype=None):
    t, h, w, c_in, c_out = shape
    if (h, w) != (1, 1) or c_in != c_out or t % 2 == 0:
      raise ValueError(f'TemporalIdentity needs a [odd t, 1, 1, c, c] kernel, got shape {shape}')
    kernel = np.zeros(shape, np.float32)
    kernel[t // 2, 0, 0] = np.eye(c_in, dtype=np.float32)
    return ops.convert_to_tensor(kernel, dtype=dtype)

  def get_config(self):
    return {}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SelfGating(keras.layers.Layer):
  """Feature gating of S3D-G: channels are rescaled by a sigmoid of a linear map of their global average."""

  def __init__(self, weight_decay: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.weight_decay = weight_decay
    self.transformer = None

  def build(self, input_shape):
    self.transformer = folded_conv3d.FoldedConv3D(
        input_shape[-1], 1, use_bias=False, kernel_initializer=_conv_initializer(),
        kernel_regularizer=regularizers.slim_l2(self.weight_decay), dtype=self.dtype_policy, name='transformer_W')
    self.transformer.build(input_shape)

  def call(self, inputs):
    context = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
    return inputs * ops.sigmoid(self.transformer(context))

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'weight_decay': self.weight_decay}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Unit3D(keras.layers.Layer):
  """A convolution + batch norm (no gamma) + ReLU, as TF-slim's `conv3d_spatiotemporal` in the S3D-G arg scope.

  `separable=True` with a temporal kernel > 1 splits a [t, k, k] kernel into a [1, k, k] convolution (batch norm,
  ReLU) and a [t, 1, 1] one named `temporal` (bias, ReLU, no batch norm) that starts as identity.
  `self_gating=True` appends the S3D-G gating, as the reference does after each gated unit.
  """

  def __init__(self, filters: int, kernel_size, strides=1, separable: bool = False, self_gating: bool = False,
               weight_decay: float = 0.0, batch_norm_momentum: float = BATCH_NORM_MOMENTUM, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = _triple(kernel_size)
    self.strides = _triple(strides)
    self.separable = separable
    self.self_gating = self_gating
    self.weight_decay = weight_decay
    self.batch_norm_momentum = batch_norm_momentum
    regularizer = regularizers.slim_l2(weight_decay)
    split = separable and self.kernel_size[0] > 1
    self.conv = folded_conv3d.FoldedConv3D(
        filters, (1,) + self.kernel_size[1:] if split else self.kernel_size,
        strides=(1,) + self.strides[1:] if split else self.strides, padding='same', use_bias=False,
        kernel_initializer=_conv_initializer(), kernel_regularizer=regularizer, dtype=self.dtype_policy, name='conv')
    self.batch_norm = keras.layers.BatchNormalization(
        momentum=batch_norm_momentum, epsilon=BATCH_NORM_EPSILON, scale=False, dtype=self.dtype_policy,
        name='BatchNorm')
    self.temporal = folded_conv3d.FoldedConv3D(
        filters, (self.kernel_size[0], 1, 1), strides=(self.strides[0], 1, 1), padding='same',
        kernel_initializer=TemporalIdentity(), kernel_regularizer=regularizer, dtype=self.dtype_policy,
        name='temporal') if split else None
    self.gating = SelfGating(weight_decay, dtype=self.dtype_policy, name='self_gating') if self_gating else None

  def build(self, input_shape):
    self.conv.build(input_shape)
    shape = self.conv.compute_output_shape(input_shape)
    self.batch_norm.build(shape)
    if self.temporal is not None:
      self.temporal.build(shape)
      shape = self.temporal.compute_output_shape(shape)
    if self.gating is not None:
      self.gating.build(shape)

  def call(self, inputs, training=None):
    net = ops.relu(self.batch_norm(self.conv(inputs), training=training))
    if self.temporal is not None:
      net = ops.relu(self.temporal(net))
    if self.gating is not None:
      net = self.gating(net)
    return net

  def compute_output_shape(self, input_shape):
    shape = self.conv.compute_output_shape(input_shape)
    return self.temporal.compute_output_shape(shape) if self.temporal is not None else shape

  def get_config(self):
    return {**super().get_config(), 'filters': self.filters, 'kernel_size': self.kernel_size, 'strides': self.strides,
            'separable': self.separable, 'self_gating': self.self_gating, 'weight_decay': self.weight_decay,
            'batch_norm_momentum': self.batch_norm_momentum}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class InceptionBlock(keras.layers.Layer):
  """Inception v1 block in 3D with separable 3x3x3 units and optional gating on each branch before concatenation.

  `depths` = (Branch_0 1x1, Branch_1 1x1, Branch_1 3x3, Branch_2 1x1, Branch_2 3x3, Branch_3 1x1 after the pool).
  A `temporal_kernel_size` of 1 gives the 2D [1, 3, 3] units of the blocks before `temporal_conv_startat`.
  """

  def __init__(self, depths: Sequence[int], temporal_kernel_size: int = 3, self_gating: bool = False,
               weight_decay: float = 0.0, batch_norm_momentum: float = BATCH_NORM_MOMENTUM, **kwargs):
    super().__init__(**kwargs)
    if len(depths) != 6:
      raise ValueError(f'InceptionBlock needs 6 depths, got {depths}')
    self.depths = tuple(depths)
    self.temporal_kernel_size = temporal_kernel_size
    self.self_gating = self_gating
    self.weight_decay = weight_decay
    self.batch_norm_momentum = batch_norm_momentum

    def unit(filters, name, kernel_size=1, gated=False):
      return Unit3D(filters, kernel_size, separable=True, self_gating=gated and self_gating, weight_decay=weight_decay,
                    batch_norm_momentum=batch_norm_momentum, dtype=self.dtype_policy, name=name)

    separable_kernel = (temporal_kernel_size, 3, 3)
    d0, d1a, d1b, d2a, d2b, d3b = self.depths
    self.branches = [
        keras.Sequential([unit(d0, 'Conv2d_0a_1x1', gated=True)], name='Branch_0'),
        keras.Sequential([unit(d1a, 'Conv2d_0a_1x1'), unit(d1b, 'Conv2d_0b_3x3', separable_kernel, gated=True)],
                         name='Branch_1'),
        keras.Sequential([unit(d2a, 'Conv2d_0a_1x1'), unit(d2b, 'Conv2d_0b_3x3', separable_kernel, gated=True)],
                         name='Branch_2'),
        keras.Sequential([keras.layers.MaxPooling3D(3, strides=1, padding='same', dtype=self.dtype_policy,
                                                    name='MaxPool_0a_3x3'),
                          unit(d3b, 'Conv2d_0b_1x1', gated=True)], name='Branch_3'),
    ]

  def build(self, input_shape):
    for branch in self.branches:
      branch.build(input_shape)

  def call(self, inputs, training=None):
    return ops.concatenate([branch(inputs, training=training) for branch in self.branches], axis=-1)

  @property
  def output_channels(self) -> int:
    return self.depths[0] + self.depths[2] + self.depths[4] + self.depths[5]

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.output_channels,)

  def get_config(self):
    return {**super().get_config(), 'depths': self.depths, 'temporal_kernel_size': self.temporal_kernel_size,
            'self_gating': self.self_gating, 'weight_decay': self.weight_decay,
            'batch_norm_momentum': self.batch_norm_momentum}


def _block_index(option: str, value: Optional[str]) -> int:
  """Position in ENDPOINTS from which a feature is on; '' or None: never."""
  if not value:
    return len(ENDPOINTS)
  if value not in STARTAT_BLOCKS:
    raise ValueError(f'{option} must be one of {STARTAT_BLOCKS} (or empty for none), got {value!r}')
  return ENDPOINTS.index(value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class S3DG(keras.Model):
  """S3D-G backbone: `[batch, frames, height, width, input_channels]` -> `{endpoint: feature map}` for `ENDPOINTS`.

  `temporal_conv_startat`: first block with [3, 1, 1] temporal convolutions; earlier blocks are 2D ('' = none).
  `gating_startat`: first block with self-gating ('' or None = S3D, no gating). Defaults are the published S3D-G.
  `weight_decay` adds TF-slim's L2 penalty on every convolution kernel to `model.losses` (0 = none).
  `batch_norm_momentum`: the reference's 0.999 suits long runs; a short run needs less (e.g. 0.9), or its moving
  statistics, which inference uses, are still mostly their initial values.
  """

  def __init__(self, input_channels: int = 3, first_temporal_kernel_size: int = 3,
               temporal_conv_startat: Optional[str] = 'Conv2d_2c_3x3', gating_startat: Optional[str] = 'Conv2d_2c_3x3',
               depth_multiplier: float = 1.0, min_depth: int = 16, weight_decay: float = 0.0,
               batch_norm_momentum: float = BATCH_NORM_MOMENTUM, **kwargs):
    super().__init__(**kwargs)
    if first_temporal_kernel_size not in FIRST_TEMPORAL_KERNEL_SIZES:
      raise ValueError(f'first_temporal_kernel_size must be one of {FIRST_TEMPORAL_KERNEL_SIZES}, '
                       f'got {first_temporal_kernel_size}')
    if depth_multiplier <= 0:
      raise ValueError(f'depth_multiplier must be positive, got {depth_multiplier}')
    if input_channels < 1:
      raise ValueError(f'input_channels must be positive, got {input_channels}')
    self.input_channels = input_channels
    self.first_temporal_kernel_size = first_temporal_kernel_size
    self.temporal_conv_startat = temporal_conv_startat
    self.gating_startat = gating_startat
    self.depth_multiplier = depth_multiplier
    self.min_depth = min_depth
    self.weight_decay = weight_decay
    self.batch_norm_momentum = batch_norm_momentum
    self.blocks = self._make_blocks(_block_index('temporal_conv_startat', temporal_conv_startat),
                                    _block_index('gating_startat', gating_startat))

  def _depth(self, depth: int) -> int:
    return max(int(depth * self.depth_multiplier), self.min_depth)

  def _make_blocks(self, temporal_from: int, gating_from: int):
    """The layers from Conv2d_1a_7x7 to Mixed_5c, each named as its endpoint."""
    blocks = []
    for index, name in enumerate(ENDPOINTS):
      temporal = 3 if index >= temporal_from else 1
      units = dict(weight_decay=self.weight_decay, batch_norm_momentum=self.batch_norm_momentum,
                   dtype=self.dtype_policy, name=name)
      common = dict(self_gating=index >= gating_from, **units)
      if name in MAX_POOLS:
        pool_size, strides = MAX_POOLS[name]
        blocks.append(keras.layers.MaxPooling3D(pool_size, strides, padding='same', dtype=self.dtype_policy,
                                                name=name))
      elif name in MIXED_BLOCK_DEPTHS:
        depths = [self._depth(d) for d in MIXED_BLOCK_DEPTHS[name]]
        blocks.append(InceptionBlock(depths, temporal, **common))
      elif name == 'Conv2d_1a_7x7':  # a full 3D convolution: separable is slow on the 3-channel input
        blocks.append(Unit3D(self._depth(64), (self.first_temporal_kernel_size, 7, 7), strides=2, **units))
      elif name == 'Conv2d_2b_1x1':
        blocks.append(Unit3D(self._depth(64), 1, **units))
      else:  # Conv2d_2c_3x3
        blocks.append(Unit3D(self._depth(192), (temporal, 3, 3), separable=True, **common))
    return blocks

  def build(self, input_shape):
    if input_shape[-1] != self.input_channels:
      raise ValueError(f'S3DG {self.name} expects {self.input_channels} input channels, got input shape '
                       f'{tuple(input_shape)}')
    # Weights depend on channels only: build for any clip size.
    shape = (None, None, None, None, self.input_channels)
    for block in self.blocks:
      if not block.built:
        block.build(shape)
      shape = block.compute_output_shape(shape)

  def call(self, inputs, training=None) -> Dict[str, keras.KerasTensor]:
    endpoints = {}
    net = inputs
    for block in self.blocks:
      net = block(net, training=training)
      endpoints[block.name] = net
    return endpoints

  def compute_output_shape(self, input_shape):
    shapes = {}
    shape = tuple(input_shape)
    for block in self.blocks:
      shape = block.compute_output_shape(shape)
      shapes[block.name] = shape
    return shapes

  def get_config(self):
    return {**super().get_config(), 'input_channels': self.input_channels,
            'first_temporal_kernel_size': self.first_temporal_kernel_size,
            'temporal_conv_startat': self.temporal_conv_startat, 'gating_startat': self.gating_startat,
            'depth_multiplier': self.depth_multiplier, 'min_depth': self.min_depth,
            'weight_decay': self.weight_decay, 'batch_norm_momentum': self.batch_norm_momentum}
