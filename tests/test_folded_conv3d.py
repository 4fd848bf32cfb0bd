"""FoldedConv3D: Keras' Conv3D results and gradients from 2-D convolutions, on real clips, for S3D-G's kernels."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import real_clips
from official_d3d.modeling.layers import folded_conv3d

# (kernel, strides, padding, frames): S3D-G's convolutions (first 3x7x7 or 7x7x7 stride 2, separable [1, k, k] and
# [t, 1, 1], 1x1x1, the head's VALID 1x1x1) and cases that exercise the padding: odd frame counts under stride 2,
# a kernel longer than the clip, VALID with a temporal kernel.
CASES = [
    ((7, 7, 7), 2, 'same', 8),
    ((7, 7, 7), 2, 'same', 9),
    ((3, 7, 7), 2, 'same', 5),
    ((1, 3, 3), 1, 'same', 8),
    ((1, 3, 3), (1, 2, 2), 'same', 7),
    ((3, 1, 1), 1, 'same', 8),
    ((3, 1, 1), (2, 1, 1), 'same', 7),
    ((1, 1, 1), 1, 'valid', 4),
    ((7, 3, 3), 1, 'same', 4),
    ((3, 3, 3), (2, 1, 2), 'valid', 6),
]


def _pair(kernel, strides, padding, channels, filters=6):
  """A Keras Conv3D and a FoldedConv3D with the same random weights."""
  reference = keras.layers.Conv3D(filters, kernel, strides=strides, padding=padding,
                                  bias_initializer='random_normal')
  folded = folded_conv3d.FoldedConv3D(filters, kernel, strides=strides, padding=padding)
  reference.build((None, None, None, None, channels))
  folded.build((None, None, None, None, channels))
  folded.set_weights(reference.get_weights())
  return reference, folded


@pytest.mark.parametrize('kernel, strides, padding, frames', CASES)
def test_outputs_and_gradients_match_conv3d(bikes_video, kernel, strides, padding, frames):
  clips = tf.constant(real_clips.rgb_clip(bikes_video, frames, 20, batch=2)[:, :, :, 1:])  # 20 x 19: unequal sides
  reference, folded = _pair(kernel, strides, padding, channels=3)

  def outputs_and_gradients(layer):
    with tf.GradientTape() as tape:
      tape.watch(clips)
      outputs = layer(clips)
      loss = tf.reduce_sum(tf.sin(outputs))  # a non-linear loss: gradients differ per position
    return [outputs] + tape.gradient(loss, [clips] + layer.trainable_weights)

  expected = outputs_and_gradients(reference)
  actual = outputs_and_gradients(folded)
  assert actual[0].shape == expected[0].shape
  assert np.abs(expected[0].numpy()).max() > 0.1
  for name, want, got in zip(('outputs', 'input gradient', 'kernel gradient', 'bias gradient'), expected, actual):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_dynamic_shapes_and_xla_match_conv3d(bikes_video):
  clips = real_clips.rgb_clip(bikes_video, 9, 24, batch=2)
  reference, folded = _pair((7, 7, 7), 2, 'same', channels=3)
  dynamic = tf.function(folded, input_signature=[tf.TensorSpec([None, None, None, None, 3], tf.float32)])
  compiled = tf.function(folded, jit_compile=True)
  expected = reference(clips).numpy()
  np.testing.assert_allclose(dynamic(clips).numpy(), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(compiled(clips).numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kernel, strides, padding, frames', CASES)
def test_static_sizes_stay_known_with_an_unknown_batch(kernel, strides, padding, frames):
  """S3D-G's head sizes its pooling from the static shape: losing the frame count there gave NaN logits."""
  reference, folded = _pair(kernel, strides, padding, channels=3)
  spec = tf.TensorSpec([None, frames, 20, 19, 3], tf.float32)
  expected = tf.function(reference).get_concrete_function(spec).structured_outputs.shape
  assert tf.function(folded).get_concrete_function(spec).structured_outputs.shape.as_list() == expected.as_list()


def test_config_round_trip_and_unsupported_options():
  layer = folded_conv3d.FoldedConv3D(4, (3, 1, 1), strides=(2, 1, 1), padding='same', name='temporal')
  restored = folded_conv3d.FoldedConv3D.from_config(layer.get_config())
  assert (restored.kernel_size, restored.strides, restored.padding) == ((3, 1, 1), (2, 1, 1), 'same')
  with pytest.raises(ValueError, match='FoldedConv3D dilated supports channels_last, dilation 1'):
    folded_conv3d.FoldedConv3D(4, 3, dilation_rate=2, name='dilated')
