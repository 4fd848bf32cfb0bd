"""TF-slim checkpoint import: names, round trip, reports, and agreement with the slim graph computed from raw ops."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import real_clips
import slim_checkpoints
from official_d3d.configs import d3d_config
from official_d3d.modeling import factory
from official_d3d.modeling.backbones import s3dg
from official_d3d.tools import import_slim_checkpoint as importer

TINY = dict(depth_multiplier=0.1, min_depth=16)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _s3dg(num_classes: int, input_channels: int = 3, tiny: bool = True, **options):
  """A built S3D-G network, tiny unless asked."""
  model_config = d3d_config.ModelConfig(**(TINY if tiny else {}), **options)
  return factory.build_s3dg(model_config, num_classes, input_channels)


def _units(model):
  for block in model.backbone.blocks:
    if isinstance(block, s3dg.Unit3D):
      yield block
    elif isinstance(block, s3dg.InceptionBlock):
      yield from (layer for branch in block.branches for layer in branch.layers if isinstance(layer, s3dg.Unit3D))


def _tiny_model(seed: int, num_classes: int = 3, input_channels: int = 3, calibration_clip=None,
                **options):
  """A tiny S3D-G network with random weights: kernels He-scaled, temporal kernels away from identity, random betas, biases.

  With `calibration_clip`, the batch-norm moving statistics become that clip's (one training-mode pass with
  momentum 0), so that activations keep their scale through the network's depth and depend on the input.
  """
  model = _s3dg(num_classes, input_channels, **options)
  rng = np.random.default_rng(seed)
  for weight in model.trainable_weights:
    if weight.path.endswith('kernel'):
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(weight.shape[:-1])), weight.shape)
    else:
      value = rng.normal(0.0, 0.1, weight.shape)
    weight.assign(value.astype(np.float32))
  if calibration_clip is not None:
    norms = [unit.batch_norm for unit in _units(model)]
    for norm in norms:
      norm.momentum = 0.0
    model(calibration_clip, training=True)
    for norm in norms:
      norm.momentum = s3dg.BATCH_NORM_MOMENTUM
    assert norms[-1].moving_variance.numpy().std() > 0
  return model


def _slim_graph(values, clip, scope='InceptionV1'):
  """The TF-slim S3D-G graph at inference, from raw tf.nn ops and the checkpoint's own names and shapes.

  Which units are separable or gated is read from the variables present, as the slim graph created them.
  Returns (logits, pooled features).
  """
  def unit(net, name, stride=1):
    name = f'{scope}/{name}'
    net = tf.nn.conv3d(net, values[f'{name}/weights'], [1, stride, stride, stride, 1], 'SAME')
    mean, variance, beta = (values[f'{name}/BatchNorm/{v}'] for v in ('moving_mean', 'moving_variance', 'beta'))
    net = tf.nn.relu((net - mean) / np.sqrt(variance + 0.001) + beta)
    if f'{name}/temporal/weights' in values:
      net = tf.nn.relu(tf.nn.conv3d(net, values[f'{name}/temporal/weights'], [1] * 5, 'SAME')
                       + values[f'{name}/temporal/biases'])
    if f'{name}/self_gating/transformer_W/weights' in values:
      context = tf.reduce_mean(net, axis=[1, 2, 3], keepdims=True)
      net *= tf.sigmoid(tf.nn.conv3d(context, values[f'{name}/self_gating/transformer_W/weights'], [1] * 5, 'SAME'))
    return net

  def max_pool(net, size, stride):
    return tf.nn.max_pool3d(net, [1, *size, 1], [1, *stride, 1], 'SAME')

  def mixed(net, name):
    branch_0 = unit(net, f'{name}/Branch_0/Conv2d_0a_1x1')
    branch_1 = unit(unit(net, f'{name}/Branch_1/Conv2d_0a_1x1'), f'{name}/Branch_1/Conv2d_0b_3x3')
    branch_2 = unit(unit(net, f'{name}/Branch_2/Conv2d_0a_1x1'), f'{name}/Branch_2/Conv2d_0b_3x3')
    branch_3 = unit(max_pool(net, (3, 3, 3), (1, 1, 1)), f'{name}/Branch_3/Conv2d_0b_1x1')
    return tf.concat([branch_0, branch_1, branch_2, branch_3], axis=4)

  net = unit(tf.constant(clip), 'Conv2d_1a_7x7', stride=2)
  net = max_pool(net, (1, 3, 3), (1, 2, 2))
  net = unit(unit(net, 'Conv2d_2b_1x1'), 'Conv2d_2c_3x3')
  net = max_pool(net, (1, 3, 3), (1, 2, 2))
  net = mixed(mixed(net, 'Mixed_3b'), 'Mixed_3c')
  net = max_pool(net, (3, 3, 3), (2, 2, 2))
  for name in ('Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f'):
    net = mixed(net, name)
  net = max_pool(net, (2, 2, 2), (2, 2, 2))
  net = mixed(mixed(net, 'Mixed_5b'), 'Mixed_5c')
  kernel = [min(size, limit) for size, limit in zip(net.shape[1:4], (2, 7, 7))]
  pooled = tf.nn.avg_pool3d(net, [1, *kernel, 1], [1] * 5, 'VALID')
  logits = tf.nn.conv3d(pooled, values[f'{scope}/Logits/Conv2d_0c_1x1/weights'], [1] * 5, 'SAME')
  logits = tf.squeeze(tf.reduce_mean(logits + values[f'{scope}/Logits/Conv2d_0c_1x1/biases'], axis=1), [1, 2])
  return logits.numpy(), tf.reduce_mean(pooled, axis=[1, 2, 3]).numpy()


def _checkpoint_values(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_every_weight_has_one_reference_name():
  model = _s3dg(400, tiny=False)
  mapping = importer.slim_variable_map(model)
  assert len(mapping) == len(model.weights) == 305
  assert {id(v) for v in mapping.values()} == {id(w) for w in model.weights}
  for name in ('InceptionV1/Conv2d_1a_7x7/weights', 'InceptionV1/Conv2d_2c_3x3/self_gating/transformer_W/weights',
               'InceptionV1/Mixed_4b/Branch_1/Conv2d_0b_3x3/BatchNorm/moving_variance',
               'InceptionV1/Mixed_4b/Branch_1/Conv2d_0b_3x3/temporal/biases',
               'InceptionV1/Mixed_4b/Branch_3/Conv2d_0b_1x1/self_gating/transformer_W/weights',
               'InceptionV1/Logits/Conv2d_0c_1x1/biases'):
    assert name in mapping
  assert mapping['InceptionV1/Mixed_5c/Branch_2/Conv2d_0b_3x3/temporal/weights'].shape == (3, 1, 1, 128, 128)
  assert mapping['InceptionV1/Logits/Conv2d_0c_1x1/weights'].shape == (1, 1, 1, 1024, 400)


@pytest.mark.slow
def test_round_trip_through_a_slim_named_checkpoint(tmp_path, bikes_video):
  clip = real_clips.rgb_clip(bikes_video, 8, 32, batch=2)
  source = _tiny_model(seed=1, calibration_clip=clip)
  prefix = slim_checkpoints.write(source, str(tmp_path / 'model.ckpt-100'),
                                  extra_variables={'global_step': np.int64(100)})
  target = _tiny_model(seed=2)
  report = importer.load_slim_checkpoint(target, str(tmp_path))  # the directory works as well as the prefix
  assert report.complete and not report.shape_mismatches
  assert report.unused_checkpoint_variables == ['global_step']
  assert sorted(report.loaded) == sorted(importer.slim_variable_map(source))
  for weight, expected in zip(target.weights, source.weights):
    np.testing.assert_array_equal(weight.numpy(), expected.numpy())
  expected = source(clip)
  actual = target(clip)
  for key in ('logits', 'features'):
    np.testing.assert_array_equal(actual[key].numpy(), expected[key].numpy())
  assert prefix == str(tmp_path / 'model.ckpt-100')


@pytest.mark.parametrize('options', [
    {},  # S3D-G as released
    dict(first_temporal_kernel_size=7, temporal_conv_startat='Mixed_4b', gating_startat=''),  # top-heavy S3D
])
@pytest.mark.slow
def test_imported_model_computes_what_the_slim_graph_computes(tmp_path, bikes_video, options):
  # 24 frames: Mixed_5c has 3 time steps, so the head's pooling and time average both act.
  clip = real_clips.rgb_clip(bikes_video, 24, 64)
  clip = np.concatenate([clip, clip[:, :, ::-1]])  # and upside down
  prefix = slim_checkpoints.write(_tiny_model(3, calibration_clip=clip, **options),
                                  str(tmp_path / 'model.ckpt'))
  model = _s3dg(3, 3, **options)
  assert importer.load_slim_checkpoint(model, prefix).complete
  logits, features = _slim_graph(_checkpoint_values(prefix), clip)
  out = model(clip)
  # Float32 rounding through ~20 layers reaches ~4e-4 here (either side against a float64 run); a wiring error
  # moves outputs by the scale of their differences between clips, ~0.1.
  np.testing.assert_allclose(out['logits'].numpy(), logits, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(out['features'].numpy(), features, rtol=1e-3, atol=1e-3)
  assert np.abs(logits[0] - logits[1]).max() > 0.05  # the two clips are told apart


@pytest.mark.slow
def test_model_options_are_read_from_the_checkpoint(tmp_path):
  options = dict(first_temporal_kernel_size=7, temporal_conv_startat='Mixed_3c', gating_startat='Mixed_4f')
  prefix = slim_checkpoints.write(_tiny_model(0, num_classes=11, input_channels=2, **options),
                                  str(tmp_path / 'flow.ckpt'))
  assert importer.model_options_from_checkpoint(prefix) == dict(num_classes=11, input_channels=2, **options)
  s3d = slim_checkpoints.write(_tiny_model(0, gating_startat=''), str(tmp_path / 's3d.ckpt'))
  assert importer.model_options_from_checkpoint(s3d)['gating_startat'] == ''


@pytest.mark.slow
def test_missing_unused_and_mismatched_variables_are_reported(tmp_path):
  s3d_prefix = slim_checkpoints.write(_tiny_model(0, gating_startat=''), str(tmp_path / 's3d.ckpt'))
  s3dg_model = _tiny_model(1)
  report = importer.load_slim_checkpoint(s3dg_model, s3d_prefix)
  gating_paths = [w.path for w in s3dg_model.weights if 'self_gating' in w.path]
  assert len(gating_paths) == 1 + 9 * 4 and report.unset_model_weights == gating_paths and not report.complete
  assert 'left unset' in report.summary() and gating_paths[0] in report.summary()

  s3dg_prefix = slim_checkpoints.write(s3dg_model, str(tmp_path / 's3dg.ckpt'))
  report = importer.load_slim_checkpoint(_tiny_model(1, gating_startat=''), s3dg_prefix)
  assert report.complete and len(report.unused_checkpoint_variables) == 37
  assert all('/self_gating/transformer_W/weights' in n for n in report.unused_checkpoint_variables)

  other_classes = _tiny_model(2, num_classes=5)
  before = [w.numpy() for w in other_classes.weights]
  with pytest.raises(ValueError, match='Logits/Conv2d_0c_1x1/weights checkpoint .*3.* model .*5'):
    importer.load_slim_checkpoint(other_classes, s3dg_prefix)
  for weight, value in zip(other_classes.weights, before):  # nothing assigned
    np.testing.assert_array_equal(weight.numpy(), value)
  report = importer.load_slim_checkpoint(other_classes, s3dg_prefix, skip_mismatched_shapes=True)
  assert [m[0] for m in report.shape_mismatches] == ['InceptionV1/Logits/Conv2d_0c_1x1/weights',
                                                     'InceptionV1/Logits/Conv2d_0c_1x1/biases']
  assert len(report.loaded) == len(other_classes.weights) - 2
  np.testing.assert_array_equal(other_classes.backbone.get_layer('Mixed_5c').weights[0].numpy(),
                                s3dg_model.backbone.get_layer('Mixed_5c').weights[0].numpy())


def test_moving_averages_are_used_when_asked(tmp_path):
  model = _tiny_model(0)
  name = 'InceptionV1/Mixed_4c/Branch_1/Conv2d_0b_3x3/temporal/weights'
  average = np.full(importer.slim_variable_map(model)[name].shape, 0.5, np.float32)
  prefix = slim_checkpoints.write(model, str(tmp_path / 'ema.ckpt'),
                                  extra_variables={name + '/ExponentialMovingAverage': average})
  fresh = _tiny_model(1)
  importer.load_slim_checkpoint(fresh, prefix, use_moving_averages=True)
  np.testing.assert_array_equal(importer.slim_variable_map(fresh)[name].numpy(), average)
  importer.load_slim_checkpoint(fresh, prefix)
  np.testing.assert_array_equal(importer.slim_variable_map(fresh)[name].numpy(),
                                importer.slim_variable_map(model)[name].numpy())


def test_unreadable_checkpoint_is_named(tmp_path):
  with pytest.raises(ValueError, match='nothing_here'):
    importer.load_slim_checkpoint(_tiny_model(0), str(tmp_path / 'nothing_here'))


@pytest.mark.slow
def test_command_line_imports_and_saves_keras_weights(tmp_path, bikes_video):
  source = _tiny_model(4, num_classes=6, input_channels=2, gating_startat='Mixed_4b')
  prefix = slim_checkpoints.write(source, str(tmp_path / 'flow' / 'model.ckpt-7'),
                                  extra_variables={'global_step': np.int64(7)})
  output = tmp_path / 'keras' / 'flow.weights.h5'
  result = subprocess.run(
      [sys.executable, '-m', 'official_d3d.tools.import_slim_checkpoint', f'--checkpoint={prefix}',
       f'--output={output}', '--depth_multiplier=0.1'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert 'checkpoint variable not used: global_step' in result.stdout
  description = json.loads((tmp_path / 'keras' / 'flow.json').read_text())
  assert description['num_classes'] == 6 and description['input_channels'] == 2
  assert description['model']['gating_startat'] == 'Mixed_4b'
  restored = _s3dg(6, 2, gating_startat='Mixed_4b')
  restored.load_weights(output)
  clip = real_clips.flow_clip(bikes_video, 4, 32)
  np.testing.assert_array_equal(restored(clip)['logits'].numpy(), source(clip)['logits'].numpy())
  assert description['model']['pixel_range'] == 'zero_to_one'  # what the authors' helper feeds their checkpoints
