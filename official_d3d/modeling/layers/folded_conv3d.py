"""A 3-D convolution computed as one 2-D convolution: the same weights and outputs, several times faster on CPU."""

import keras
from keras import ops

_PACKAGE = 'official_d3d'


def _non_negative(value):
  """max(value, 0) for a Python int (static shape) or a scalar tensor (dynamic shape)."""
  return max(value, 0) if isinstance(value, int) else ops.maximum(value, 0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FoldedConv3D(keras.layers.Conv3D):
  """`keras.layers.Conv3D` (channels last, no dilation, no groups) that runs as a 2-D convolution.

  TensorFlow's CPU kernels, with or without XLA, run 3-D convolutions and their gradients several times slower than
  2-D ones doing the same arithmetic (`benchmarks/train_benchmark.py`). Every S3D-G convolution folds into 2-D:
  a [t, 1, 1] kernel convolves over (frames, height x width); any other kernel convolves each output frame's
  t input frames, stacked along the channels, in 2-D ([1, k, k] kernels: t = 1, frames fold into the batch).
  The variables and config are Conv3D's, so checkpoints and saved models do not change. Static sizes stay known
  through the folding: S3D-G's head sizes its pooling from them.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if self.data_format != 'channels_last' or set(self.dilation_rate) != {1} or self.groups != 1:
      raise ValueError(f'FoldedConv3D {self.name} supports channels_last, dilation 1 and groups 1 only, got '
                       f'{self.data_format}, {self.dilation_rate} and {self.groups}')

  def convolution_op(self, inputs, kernel):
    frames_kernel, height_kernel, width_kernel = self.kernel_size
    frames_stride, height_stride, width_stride = self.strides
    batch, frames, height, width, channels = ops.shape(inputs)
    if (height_kernel, width_kernel, height_stride, width_stride) == (1, 1, 1, 1):
      rows = ops.reshape(inputs, (batch, frames, height * width, channels))
      outputs = ops.conv(rows, kernel[:, 0], strides=(frames_stride, 1), padding=self.padding)
      return ops.reshape(outputs, (batch, ops.shape(outputs)[1], height, width, self.filters))
    # [kt, kh, kw, c, f] -> [kh, kw, kt * c, f], matching the frame-major channels of _stack_frames.
    kernel_2d = ops.reshape(ops.transpose(kernel, (1, 2, 0, 3, 4)),
                            (height_kernel, width_kernel, frames_kernel * channels, self.filters))
    stacked = self._stack_frames(inputs)
    images = ops.reshape(stacked, (-1, height, width, frames_kernel * channels))
    outputs = ops.conv(images, kernel_2d, strides=(height_stride, width_stride), padding=self.padding)
    _, out_height, out_width, _ = ops.shape(outputs)
    return ops.reshape(outputs, (batch, ops.shape(stacked)[1], out_height, out_width, self.filters))

  def _stack_frames(self, inputs):
    """[batch, out_frames, height, width, t x channels]: each output frame's t input frames, side by side."""
    size, stride = self.kernel_size[0], self.strides[0]
    if size == 1 and stride == 1:
      return inputs
    frames = ops.shape(inputs)[1]
    if self.padding == 'same':  # TensorFlow's SAME: the odd padded frame goes after
      out_frames = (frames + stride - 1) // stride
      total = _non_negative((out_frames - 1) * stride + size - frames)
      inputs = ops.pad(inputs, [[0, 0], [total // 2, total - total // 2], [0, 0], [0, 0], [0, 0]])
    else:
      out_frames = (frames - size) // stride + 1
    return ops.concatenate([inputs[:, offset::stride][:, :out_frames] for offset in range(size)], axis=-1)
