"""S3D-G backbone and its classification network: endpoints and shapes on real clips, the reference's parameter count,
its variants, initialisation, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import real_clips
from official_d3d.configs import d3d_config
from official_d3d.modeling import classification_network
from official_d3d.modeling import factory
from official_d3d.modeling.backbones import s3dg
from official_d3d.modeling.heads import classification_head

TINY = dict(depth_multiplier=0.1, min_depth=16)

# Trainable parameters of the TF-slim S3D-G graph (nets/s3dg.py) with 400 classes, RGB input and
# first_temporal_kernel_size=3, counted from its variables: every conv has `weights`; a conv followed by batch norm
# adds only `beta` (no gamma, no bias; the moving statistics are not trainable); each temporal [3, 1, 1] conv of a
# separable unit adds 3 c^2 + c (weights and biases); each self-gating adds a c x c `transformer_W`.
#   Conv2d_1a_7x7  3*7*7*3*64 + 64 = 28,288      Conv2d_2b_1x1  64*64 + 64 = 4,160
#   Conv2d_2c_3x3  9*64*192 + 192 + (3*192^2 + 192) + 192^2 (gating) = 258,432      stem total 290,880
#   Mixed_3b 230,416  Mixed_3c 544,672  Mixed_4b 587,376  Mixed_4c 671,656  Mixed_4d 784,856  Mixed_4e 937,760
#   Mixed_4f 1,360,320  Mixed_5b 1,535,424  Mixed_5c 2,165,488  Logits 1024*400 + 400 = 410,000
# Sum: 9,518,848. Of these the self-gating holds 1,219,328 and the temporal convolutions 2,278,080.
REFERENCE_TRAINABLE_PARAMETERS = 9_518_848
GATING_PARAMETERS = 1_219_328
# Temporal convs of the blocks before Mixed_4b: Conv2d_2c (192), Mixed_3b (128, 32), Mixed_3c (192, 96): 3 c^2 + c each.
TEMPORAL_PARAMETERS_BEFORE_MIXED_4B = sum(3 * c * c + c for c in (192, 128, 32, 192, 96))  # 301,696
# A 7x7x7 first conv adds 4 frames of 7*7*3*64 weights.
FIRST_KERNEL_7_EXTRA_PARAMETERS = 4 * 7 * 7 * 3 * 64  # 37,632


def _trainable_parameters(model) -> int:
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _network(num_classes: int, input_channels: int = 3, dropout_rate: float = 0.2, weight_decay: float = 0.0,
             name: str = 's3dg', **options) -> classification_network.VideoClassificationNetwork:
  backbone = s3dg.S3DG(input_channels, weight_decay=weight_decay, **options)
  return classification_network.VideoClassificationNetwork(backbone, num_classes, dropout_rate, weight_decay,
                                                           name=name)


def _full_size(**options) -> classification_network.VideoClassificationNetwork:
  model = _network(400, **options)
  model.build((None, 64, 224, 224, 3))  # variables only, no forward pass
  return model


def test_backbone_returns_every_endpoint_in_network_order(bikes_video):
  backbone = s3dg.S3DG(3, **TINY)
  endpoints = backbone(real_clips.rgb_clip(bikes_video, 16, 64))
  assert tuple(endpoints) == s3dg.ENDPOINTS
  # The slim graph's strides: /2 at Conv2d_1a (time too), /2 in space at MaxPool_2a and 3a, /2 at 4a and 5a.
  shapes = {name: tuple(value.shape[1:4]) for name, value in endpoints.items()}
  assert shapes['Conv2d_1a_7x7'] == (8, 32, 32) and shapes['Conv2d_2c_3x3'] == (8, 16, 16)
  assert shapes['Mixed_3c'] == (8, 8, 8) and shapes['Mixed_4f'] == (4, 4, 4) and shapes['Mixed_5c'] == (2, 2, 2)
  assert {name: shape[1:] for name, shape in backbone.compute_output_shape((1, 16, 64, 64, 3)).items()} == {
      name: tuple(value.shape[1:]) for name, value in endpoints.items()}


def test_network_outputs_the_head_and_every_endpoint(bikes_video):
  network = _network(7, **TINY)
  clip = real_clips.rgb_clip(bikes_video, 8, 32)
  outputs = network(clip)
  assert tuple(outputs) == ('logits', 'features') + s3dg.ENDPOINTS
  assert network.endpoint_names == s3dg.ENDPOINTS
  np.testing.assert_array_equal(outputs['Mixed_4f'].numpy(), network.backbone(clip)['Mixed_4f'].numpy())


@pytest.mark.slow
def test_rgb_and_flow_outputs_on_real_clips(bikes_video):
  rgb = _network(7, 3, **TINY)
  out = rgb(real_clips.rgb_clip(bikes_video, 8, 32, batch=2))
  # Mixed_5c has max(int(d * 0.1), 16) channels per branch: 38 + 38 + 16 + 16.
  assert out['logits'].shape == (2, 7) and out['features'].shape == (2, 108)
  flow = _network(5, 2, **TINY)
  out = flow(real_clips.flow_clip(bikes_video, 4, 48))
  assert out['logits'].shape == (1, 5) and out['features'].shape == (1, 108)
  assert out['logits'].dtype == tf.float32 and np.isfinite(out['logits'].numpy()).all()
  # Features after ReLUs and average pooling are non-negative and not all zero on a real clip.
  assert (out['features'].numpy() >= 0).all() and out['features'].numpy().max() > 0


@pytest.mark.slow
def test_dynamic_batch_and_clip_sizes(bikes_video):
  model = _network(3, 3, **TINY)
  forward = tf.function(lambda clip: model(clip)['logits'],
                        input_signature=[tf.TensorSpec([None, 4, 32, 32, 3], tf.float32)])
  clip = real_clips.rgb_clip(bikes_video, 4, 32, batch=3)
  assert forward(clip[:1]).shape == (1, 3) and forward(clip).shape == (3, 3)
  # The smallest supported clip, 2 frames, and a non-square one.
  assert model(real_clips.rgb_clip(bikes_video, 2, 32))['logits'].shape == (1, 3)
  assert model(tf.image.resize(clip[0], (40, 56))[None])['logits'].shape == (1, 3)


def test_logits_are_the_classifier_of_the_features_at_inference(bikes_video):
  # With 24 frames Mixed_5c has 3 time steps: the head pools [2, 2, 2] windows and averages 2 logits over time.
  model = _network(6, 3, **TINY)
  out = model(real_clips.rgb_clip(bikes_video, 24, 64))
  kernel = model.head.classifier.kernel.numpy()[0, 0, 0]
  expected = out['features'].numpy() @ kernel + model.head.classifier.bias.numpy()
  np.testing.assert_allclose(out['logits'].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_parameter_count_matches_the_reference():
  assert _trainable_parameters(_full_size()) == REFERENCE_TRAINABLE_PARAMETERS
  assert (_trainable_parameters(_full_size(first_temporal_kernel_size=7))
          == REFERENCE_TRAINABLE_PARAMETERS + FIRST_KERNEL_7_EXTRA_PARAMETERS)


@pytest.mark.slow
def test_s3d_and_top_heavy_variants():
  s3d = _full_size(gating_startat='')
  assert _trainable_parameters(s3d) == REFERENCE_TRAINABLE_PARAMETERS - GATING_PARAMETERS
  assert not any('self_gating' in w.path for w in s3d.weights)

  top_heavy = _full_size(temporal_conv_startat='Mixed_4b')
  assert (_trainable_parameters(top_heavy)
          == REFERENCE_TRAINABLE_PARAMETERS - TEMPORAL_PARAMETERS_BEFORE_MIXED_4B)
  temporal_blocks = {w.path.split('/')[2] for w in top_heavy.weights if '/temporal/' in w.path}
  assert temporal_blocks == {'Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f', 'Mixed_5b', 'Mixed_5c'}
  # 2D units before it: [1, 3, 3] kernels.
  assert top_heavy.backbone.get_layer('Mixed_3c').branches[1].layers[1].conv.kernel.shape == (1, 3, 3, 128, 192)

  late_gating = _full_size(gating_startat='Mixed_5b')
  gated_blocks = {w.path.split('/')[2] for w in late_gating.weights if 'self_gating' in w.path}
  assert gated_blocks == {'Mixed_5b', 'Mixed_5c'}


def test_temporal_convolutions_start_as_identity(bikes_video):
  model = s3dg.S3DG(3, **TINY)
  clip = real_clips.rgb_clip(bikes_video, 4, 32)
  model(clip)
  units = [layer for block in model.blocks if isinstance(block, s3dg.InceptionBlock)
           for branch in block.branches for layer in branch.layers if isinstance(layer, s3dg.Unit3D)]
  separable = [unit for unit in units + [model.get_layer('Conv2d_2c_3x3')] if unit.temporal is not None]
  assert len(separable) == 19  # Conv2d_2c and two per Mixed block
  for unit in separable:
    kernel = unit.temporal.kernel.numpy()
    channels = kernel.shape[-1]
    np.testing.assert_array_equal(kernel[1, 0, 0], np.eye(channels))
    assert not kernel[[0, 2]].any() and not unit.temporal.bias.numpy().any()
  # So the separable unit computes what its spatial [1, 3, 3] conv alone does.
  unit = model.get_layer('Conv2d_2c_3x3')
  features = model.get_layer('Conv2d_2b_1x1')(model.blocks[1](model.blocks[0](clip)))
  spatial = tf.nn.relu(unit.batch_norm(unit.conv(features)))
  np.testing.assert_allclose(unit.gating.call(spatial).numpy(), unit(features).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_training_mode_updates_batch_norm_and_applies_dropout(bikes_video):
  model = _network(3, 3, dropout_rate=0.5, **TINY)
  clip = real_clips.rgb_clip(bikes_video, 4, 32, batch=2)
  inference = model(clip)['logits'].numpy()
  np.testing.assert_array_equal(inference, model(clip)['logits'].numpy())
  moving_mean = model.backbone.get_layer('Conv2d_1a_7x7').batch_norm.moving_mean
  assert not moving_mean.numpy().any()
  train_a = model(clip, training=True)['logits'].numpy()
  train_b = model(clip, training=True)['logits'].numpy()
  assert moving_mean.numpy().any()
  assert not np.allclose(train_a, train_b)  # different dropout masks


def test_weight_decay_is_the_slim_l2_penalty_on_kernels(bikes_video):
  model = _network(3, 3, weight_decay=1e-4, **TINY)
  model(real_clips.rgb_clip(bikes_video, 4, 32))
  kernels = [w for w in model.trainable_weights if w.path.endswith('kernel')]
  # Every conv kernel (stem 2 + 3; per Mixed block 6 units, 2 temporal, 4 gating; logits); not biases or betas.
  assert len(model.losses) == len(kernels) == 2 + 3 + 9 * 12 + 1
  expected = 1e-4 * sum(float(np.sum(w.numpy() ** 2)) / 2 for w in kernels)
  np.testing.assert_allclose(float(tf.add_n(model.losses)), expected, rtol=1e-5)
  assert not _network(3, 3, **TINY).losses


def test_logits_stay_float32_under_mixed_bfloat16(bikes_video):
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    model = _network(3, 3, **TINY)
    out = model(real_clips.rgb_clip(bikes_video, 4, 32), training=True)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert model.backbone.get_layer('Conv2d_1a_7x7').compute_dtype == 'bfloat16'
  assert out['logits'].dtype == tf.float32 and out['features'].dtype == tf.float32
  assert np.isfinite(out['logits'].numpy()).all()


@pytest.mark.parametrize('layer', [
    s3dg.SelfGating(weight_decay=1e-7, name='self_gating'),
    s3dg.Unit3D(24, (3, 3, 3), strides=(1, 2, 2), separable=True, self_gating=True, weight_decay=1e-7, name='unit'),
    s3dg.InceptionBlock((8, 8, 16, 4, 8, 8), temporal_kernel_size=1, self_gating=True, name='Mixed_3b'),
    classification_head.ClassificationHead(10, dropout_rate=0.3, weight_decay=1e-7, name='Logits'),
])
def test_layer_config_round_trip(layer):
  restored = type(layer).from_config(layer.get_config())
  assert restored.get_config() == layer.get_config()
  clip = tf.random.stateless_uniform([1, 4, 8, 8, 6], seed=(1, 2), minval=-1, maxval=1)
  output = layer(clip)
  restored.build(clip.shape)
  restored.set_weights(layer.get_weights())
  tf.nest.map_structure(lambda a, b: np.testing.assert_array_equal(a.numpy(), b.numpy()), output, restored(clip))


@pytest.mark.slow
def test_network_saves_and_loads_as_keras_file(tmp_path, bikes_video):
  model = _network(4, 2, first_temporal_kernel_size=7, temporal_conv_startat='Mixed_3c', gating_startat='',
                   name='teacher', **TINY)
  clip = real_clips.flow_clip(bikes_video, 4, 32)
  expected = model(clip)
  config = model.get_config()
  assert classification_network.VideoClassificationNetwork.from_config(config).get_config() == config
  model.save(tmp_path / 'teacher.keras')
  restored = keras.saving.load_model(tmp_path / 'teacher.keras')
  assert isinstance(restored.backbone, s3dg.S3DG) and restored.name == 'teacher'
  for name in ('logits', 'Mixed_3b'):
    np.testing.assert_array_equal(restored(clip)[name].numpy(), expected[name].numpy())
  assert isinstance(s3dg.TemporalIdentity.from_config(s3dg.TemporalIdentity().get_config()), s3dg.TemporalIdentity)


def test_build_from_model_config():
  config = d3d_config.ModelConfig(first_temporal_kernel_size=7, temporal_conv_startat='Mixed_4b', gating_startat='',
                                  depth_multiplier=0.25, min_depth=8, dropout_rate=0.5)
  model = factory.build_s3dg(config, num_classes=51, input_channels=2, weight_decay=1e-7, name='flow_teacher')
  assert model.name == 'flow_teacher' and model.built
  # Every setting but the input's scaling is a layer option, of the backbone or (dropout) of the head.
  options = {**model.backbone.get_config(), **model.head.get_config()}
  assert {k: v for k, v in options.items() if k in vars(config)} == {
      k: v for k, v in vars(config).items() if k != 'pixel_range'}
  assert model.backbone.get_layer('Conv2d_1a_7x7').conv.kernel.shape == (7, 7, 7, 2, 16)
  assert model.head.classifier.kernel.shape == (1, 1, 1, 256, 51)


@pytest.mark.parametrize('options, message', [
    (dict(temporal_conv_startat='Mixed_9z'), 'temporal_conv_startat'),
    (dict(gating_startat='MaxPool_4a_3x3'), 'gating_startat'),
    (dict(first_temporal_kernel_size=4), 'first_temporal_kernel_size'),
    (dict(depth_multiplier=0.0), 'depth_multiplier'),
])
def test_bad_options_are_named(options, message):
  with pytest.raises(ValueError, match=message):
    s3dg.S3DG(3, **options)


def test_wrong_input_channels_are_named():
  with pytest.raises(ValueError, match='expects 2 input channels'):
    _network(10, 2, **TINY)(tf.zeros([1, 4, 32, 32, 3]))
