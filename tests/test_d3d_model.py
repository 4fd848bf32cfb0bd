"""D3D training step: frozen teacher, distillation, tf.distribute and mixed precision; RGB-only evaluation."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import real_clips
from official_d3d.configs import d3d_config
from official_d3d.modeling import d3d_model
from official_d3d.modeling import factory
from official_d3d.modeling import optimization
from official_d3d.ops import training_clips
from official_d3d.train_lib import precision_policy

pytestmark = pytest.mark.slow  # trains, exports or runs commands: `make test-fast` leaves these out

NUM_FRAMES, SIZE, BATCH = 4, 32, 4
LABELS = np.array([0, 1, 2, 0], np.int32)
TEACHER_BIAS_PATH = 'Logits/Conv2d_0c_1x1/bias'  # the S3D-G classifier's bias (TF-slim name)
TEACHER_LOGITS = [2.0, -1.0, 0.5]


def tiny_config(**distillation) -> d3d_config.ExperimentConfig:
  return d3d_config.ExperimentConfig(
      stream='d3d', data=d3d_config.DataConfig(num_classes=3),
      model=d3d_config.ModelConfig(depth_multiplier=0.1, min_depth=8, dropout_rate=0.0),
      distillation=d3d_config.DistillationConfig(**distillation),
      train=d3d_config.TrainConfig(learning_rate=0.05, schedule='constant', weight_decay=0.0))


def build_d3d(config, policy='float32', jit_compile=False) -> d3d_model.D3DModel:
  with precision_policy(policy):
    model = d3d_model.D3DModel(factory.build_network(config, 'rgb'), factory.build_network(config, 'flow'),
                               config.distillation)
    model.compile(optimizer=optimization.build_optimizer(config.train), jit_compile=jit_compile)
  return model


def set_teacher_logits(model, logits):
  """Makes the untrained teacher predict a fixed, confident distribution: its features are ~0, so logits = bias."""
  [bias] = [w for w in model.teacher.weights if w.path.endswith(TEACHER_BIAS_PATH)]
  bias.assign(logits)


@pytest.fixture(scope='module')
def batch(bikes_video):
  """Four real RGB clips and their Farneback flow clips, shifted by one frame each."""
  rgb = real_clips.rgb_clip(bikes_video, NUM_FRAMES, SIZE, batch=BATCH)
  flow = real_clips.flow_clip(bikes_video, NUM_FRAMES, SIZE, batch=BATCH)
  return {'rgb': rgb, 'flow': flow}, LABELS


def values(weights):
  return [w.numpy().copy() for w in weights]


@pytest.fixture(scope='module')
def trained(batch):
  """A D3D model trained 5 steps on one fixed batch, with the weights before and after."""
  keras.utils.set_random_seed(0)  # the losses it checks depend on the initialisation
  model = build_d3d(tiny_config())
  set_teacher_logits(model, TEACHER_LOGITS)
  before = {'teacher': values(model.teacher.weights), 'student': values(model.network.weights),
            'student_trainable': values(model.network.trainable_weights)}
  dataset = tf.data.Dataset.from_tensors(batch).repeat()
  # One step per epoch: the history holds each step's own losses.
  history = model.fit(dataset, epochs=5, steps_per_epoch=1, shuffle=False, verbose=0).history
  return model, before, history


def test_teacher_is_frozen_and_untouched_while_the_student_learns(trained):
  model, before, _ = trained
  assert not model.teacher.trainable_weights
  assert not any(w is t for w in model.trainable_weights for t in model.teacher.weights)
  # All teacher weights, batch-norm moving statistics included (it runs in inference mode).
  for old, new in zip(before['teacher'], model.teacher.weights):
    np.testing.assert_array_equal(old, new.numpy())
  changed = [not np.array_equal(old, new.numpy())
             for old, new in zip(before['student_trainable'], model.network.trainable_weights)]
  assert np.mean(changed) > 0.9
  # The student's batch norm trained: its moving statistics moved.
  moving = [not np.array_equal(old, new.numpy())
            for old, new in zip(before['student'], model.network.weights) if 'moving_mean' in new.path]
  assert moving and all(moving)


def test_distillation_loss_falls_on_a_fixed_batch(trained):
  _, _, history = trained
  losses = history['distill_loss']
  # Student logits start near 0, the teacher's at TEACHER_LOGITS: initial L2 = mean(t^2).
  np.testing.assert_allclose(losses[0], np.mean(np.square(TEACHER_LOGITS)), rtol=0.05)
  assert losses[-1] < 0.5 * losses[0]
  np.testing.assert_allclose(history['loss'], np.add(history['cls_loss'], losses), rtol=1e-5)


def test_distillation_starts_at_start_step_ramps_to_its_weight_and_stops_at_end_step(batch):
  keras.utils.set_random_seed(0)
  model = build_d3d(tiny_config(weight=2.0, start_step=2, ramp_steps=2, end_step=5))
  set_teacher_logits(model, TEACHER_LOGITS)
  weights = []
  for step in range(7):
    model.optimizer.iterations.assign(step)
    weights.append(float(model.distillation_weight()))
  np.testing.assert_allclose(weights, [0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0])
  # In training: no distillation loss before step 2, the full one at step 4, none again from step 5.
  model.optimizer.iterations.assign(0)
  history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=7, steps_per_epoch=1, shuffle=False,
                      verbose=0).history
  assert history['distill_loss'][:3] == [0.0, 0.0, 0.0]
  assert history['distill_loss'][4] > 0.0
  assert history['distill_loss'][5:] == [0.0, 0.0]
  np.testing.assert_allclose(history['loss'], np.add(history['cls_loss'], history['distill_loss']), rtol=1e-5)


def test_an_end_step_that_is_not_after_the_start_step_is_refused():
  with pytest.raises(d3d_config.ConfigError, match='distillation.end_step=3 must come after distillation.start_step=3'):
    tiny_config(start_step=3, end_step=3).validate()


def test_test_step_is_rgb_only_and_averages_views(trained, batch):
  model, _, _ = trained
  views = np.stack([batch[0]['rgb'][:2], batch[0]['rgb'][2:]], axis=1)  # [2 videos, 2 views, T, S, S, 3]
  labels = np.array([0, 1], np.int32)
  logs = model.evaluate({'rgb': views}, labels, batch_size=2, verbose=0, return_dict=True)
  probabilities = tf.nn.softmax(model.network(batch[0]['rgb'], training=False)['logits']).numpy()
  per_video = np.stack([probabilities[[0, 2]].mean(axis=0), probabilities[[1, 3]].mean(axis=0)])
  label_probabilities = np.maximum(per_video[[0, 1], labels], keras.config.epsilon())
  np.testing.assert_allclose(logs['loss'], -np.mean(np.log(label_probabilities)), rtol=1e-4)
  np.testing.assert_allclose(logs['top_1'], np.mean(per_video.argmax(axis=1) == labels))
  outputs = model.predict(tf.data.Dataset.from_tensors(({'rgb': views}, labels)), verbose=0)
  np.testing.assert_allclose(outputs['probabilities'], per_video, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(outputs['labels'], labels)


def test_distillation_losses():
  student = tf.constant([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
  teacher = tf.constant([[0.0, 2.0, 1.0], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(d3d_model.distillation_loss(student, teacher, 'l2', 1.0), [3.0, 0.0], rtol=1e-6)
  temperature = 4.0
  p = tf.nn.softmax(teacher / temperature).numpy()
  q = tf.nn.softmax(student / temperature).numpy()
  expected = temperature**2 * np.sum(p * np.log(p / q), axis=-1)
  np.testing.assert_allclose(d3d_model.distillation_loss(student, teacher, 'kl', temperature), expected, rtol=1e-5)
  assert expected[0] > 0 and abs(expected[1]) < 1e-6


def recorded_distillation(model, batch):
  """One forward pass of the student and teacher on a tape: (tape, targets, outputs, per-clip distillation loss)."""
  with tf.GradientTape() as tape:
    targets = model.training_targets(batch[0])
    outputs = model(batch[0], training=True)
    [distill] = model.auxiliary_losses(outputs, targets).values()
  return tape, targets, outputs, distill


def test_head_maps_student_features_to_teacher_features(trained, batch):
  student, teacher = trained[0].network, trained[0].teacher
  model = d3d_model.D3DModel(student, teacher, d3d_config.DistillationConfig(target='features', use_head=True))
  feature_size = teacher.compute_output_shape((None, None, None, None, 2))['features'][-1]
  assert model.head.kernel.shape == (feature_size, feature_size)
  tape, _, _, distill = recorded_distillation(model, batch)
  assert distill.shape == (BATCH,)
  gradients = tape.gradient(distill, [model.head.kernel] + teacher.weights)
  assert np.any(gradients[0].numpy()) and all(g is None for g in gradients[1:])


def test_distillation_from_a_backbone_endpoint(trained, batch):
  student, teacher = trained[0].network, trained[0].teacher
  model = d3d_model.D3DModel(student, teacher, d3d_config.DistillationConfig(target='Mixed_3c'))
  tape, _, outputs, distill = recorded_distillation(model, batch)
  expected = np.mean(np.square(outputs['Mixed_3c'].numpy() - teacher(batch[0]['flow'])['Mixed_3c'].numpy()),
                     axis=(1, 2, 3, 4))
  np.testing.assert_allclose(distill.numpy(), expected, rtol=1e-5)
  assert distill.shape == (BATCH,) and np.all(expected > 0)
  # The loss reaches the layers up to Mixed_3c and none after it.
  early = student.backbone.get_layer('Conv2d_1a_7x7').conv.kernel
  late = student.backbone.get_layer('Mixed_5c').trainable_weights + student.head.trainable_weights
  gradients = tape.gradient(distill, [early] + late)
  assert np.any(gradients[0].numpy()) and all(g is None for g in gradients[1:])


def test_an_adaptor_maps_the_students_feature_map_to_the_teachers_at_each_position(trained, batch):
  student, teacher = trained[0].network, trained[0].teacher
  model = d3d_model.D3DModel(student, teacher, d3d_config.DistillationConfig(target='Mixed_3c', use_head=True))
  channels = teacher.compute_output_shape((None, None, None, None, 2))['Mixed_3c'][-1]
  assert model.head.kernel.shape == (channels, channels)
  tape, targets, outputs, distill = recorded_distillation(model, batch)
  adapted = np.einsum('bthwc,cd->bthwd', outputs['Mixed_3c'].numpy(), model.head.kernel.numpy()) + model.head.bias
  expected = np.mean(np.square(adapted - targets.numpy()), axis=(1, 2, 3, 4))
  np.testing.assert_allclose(distill.numpy(), expected, rtol=1e-5)
  early = student.backbone.get_layer('Conv2d_1a_7x7').conv.kernel
  gradients = tape.gradient(distill, [model.head.kernel, early] + teacher.weights)
  assert np.any(gradients[0].numpy()) and np.any(gradients[1].numpy()) and all(g is None for g in gradients[2:])


def test_inconsistent_distillation_settings_are_rejected(trained):
  student, teacher = trained[0].network, trained[0].teacher
  with pytest.raises(ValueError, match='target=logits'):
    d3d_model.D3DModel(student, teacher, d3d_config.DistillationConfig(target='features', loss='kl'))
  with pytest.raises(ValueError, match='use_head'):  # 8 teacher features, more in the student
    d3d_model.D3DModel(student, SmallNetwork(2), d3d_config.DistillationConfig(target='features'))
  with pytest.raises(ValueError, match="network's outputs .*Mixed_5c.*got 'Mixed_9z'"):
    d3d_model.D3DModel(student, teacher, d3d_config.DistillationConfig(target='Mixed_9z'))


def test_task_models_save_and_load_as_keras_files(trained, batch, tmp_path):
  model = trained[0]
  distillation = d3d_config.DistillationConfig(target='features', use_head=True, weight=0.5, start_step=3)
  d3d = d3d_model.D3DModel(model.network, model.teacher, distillation, label_smoothing=0.1, name='student')
  classifier = d3d_model.VideoClassifier(model.teacher, 'flow', name='teacher_classifier')
  for task_model in (d3d, classifier):
    path = tmp_path / f'{task_model.name}.keras'
    task_model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(task_model)
    assert json.dumps(restored.get_config(), sort_keys=True) == json.dumps(task_model.get_config(), sort_keys=True)
    np.testing.assert_array_equal(restored(batch[0])['logits'].numpy(), task_model(batch[0])['logits'].numpy())
  assert restored.modality == 'flow'
  restored = keras.saving.load_model(tmp_path / 'student.keras')
  assert restored.distillation == distillation and not restored.teacher.trainable
  np.testing.assert_array_equal(restored.head.kernel.numpy(), d3d.head.kernel.numpy())


def test_bfloat16_step_is_finite(batch):
  model = build_d3d(tiny_config(), 'mixed_bfloat16')
  start = values(model.network.trainable_weights)
  logs = model.train_step(batch)
  assert model.network.layers[0].compute_dtype == 'bfloat16'
  assert all(np.isfinite(float(v)) for v in logs.values())
  # An untrained network is nearly uniform over the 3 classes.
  np.testing.assert_allclose(float(logs['cls_loss']), np.log(3.0), rtol=0.02)
  for old, weight in zip(start, model.network.trainable_weights):
    assert weight.dtype == 'float32' and np.all(np.isfinite(weight.numpy()))
  assert any(not np.array_equal(old, w.numpy()) for old, w in zip(start, model.network.trainable_weights))


class SmallNetwork(keras.Model):
  """Conv3D + batch norm + pooling + dense, returning S3D-G's outputs.

  Its ops have float16 kernels on CPU (S3D-G's MaxPool3D has none) and trace in a second: it serves the float16 and
  tf.distribute checks of the training step, which are about the step, not the backbone.
  """

  def __init__(self, channels, num_classes=3, **kwargs):
    super().__init__(**kwargs)
    self.input_channels = channels
    # No bias before batch norm (as in S3D-G): its gradient is zero up to rounding, which differs between devices.
    self.conv = keras.layers.Conv3D(8, 3, padding='same', use_bias=False, dtype=self.dtype_policy)
    self.norm = keras.layers.BatchNormalization(dtype=self.dtype_policy)
    self.classifier = keras.layers.Dense(num_classes, dtype=self.dtype_policy)
    self.build((None, None, None, None, channels))

  def build(self, input_shape):
    self.conv.build(input_shape)
    self.norm.build(input_shape[:-1] + (8,))
    self.classifier.build((None, 8))

  def call(self, inputs, training=None):
    features = tf.reduce_mean(keras.ops.relu(self.norm(self.conv(inputs), training=training)), axis=(1, 2, 3))
    return {'logits': tf.cast(self.classifier(features), tf.float32), 'features': tf.cast(features, tf.float32)}

  def compute_output_shape(self, input_shape):
    return {'logits': (input_shape[0], 3), 'features': (input_shape[0], 8)}


def build_small_d3d(config, pixel_range=d3d_config.DEFAULT_PIXEL_RANGE, jit_compile=False):
  model = d3d_model.D3DModel(SmallNetwork(3), SmallNetwork(2), config.distillation, pixel_range=pixel_range)
  model.compile(optimizer=optimization.build_optimizer(config.train), jit_compile=jit_compile)
  return model


def as_uint8_batch(features, mirrored, flow_scale):
  """Float clips in [-1, 1] in the form the input pipeline hands over with `data.convert_on_accelerator`: uint8
  levels, with each clip's flip and flow scale still to apply."""
  clips = {name: np.rint((values + 1.0) * 127.5).astype(np.uint8) for name, values in features.items()}
  return {**clips, training_clips.MIRRORED: np.array(mirrored, np.uint8),
          training_clips.FLOW_SCALE: np.array(flow_scale, np.float32)}


def test_uint8_batch_trains_as_its_conversion_also_under_xla(batch):
  """The training step converts the pipeline's uint8 clips itself (RGB to the model's pixel range), so that a step
  on them, XLA-compiled, updates the weights as a step on their float32 conversion."""
  features, labels = batch
  uint8_batch = as_uint8_batch(features, [True, False, False, True], [1.0, 0.8, 1.25, 1.0])
  converted = training_clips.to_network_inputs(tf.nest.map_structure(tf.constant, uint8_batch),
                                               d3d_config.PIXEL_RANGES['zero_to_one'])
  logs, weights = {}, {}
  for name, inputs, jit_compile in (('uint8', uint8_batch, True), ('float32', converted, False)):
    keras.utils.set_random_seed(0)
    model = build_small_d3d(tiny_config(), pixel_range='zero_to_one', jit_compile=jit_compile)
    history = model.fit(tf.data.Dataset.from_tensors((inputs, labels)), epochs=1, shuffle=False, verbose=0).history
    logs[name], weights[name] = {key: values[0] for key, values in history.items()}, model.get_weights()
  for key in ('loss', 'cls_loss', 'distill_loss'):
    np.testing.assert_allclose(logs['uint8'][key], logs['float32'][key], rtol=1e-5, err_msg=key)
  for uint8_weight, float_weight in zip(weights['uint8'], weights['float32']):
    np.testing.assert_allclose(uint8_weight, float_weight, rtol=1e-4, atol=1e-6)


def test_float16_step_scales_the_loss_and_matches_float32(batch):
  """Under mixed_float16 the optimizer is a LossScaleOptimizer; an unscaled loss would shrink the update 32768x."""
  models = {}
  for policy in ('float32', 'mixed_float16'):
    with precision_policy(policy):
      models[policy] = build_small_d3d(tiny_config())
  models['mixed_float16'].set_weights(models['float32'].get_weights())
  start = values(models['float32'].network.trainable_weights)
  logs = {policy: model.train_step(batch) for policy, model in models.items()}
  assert isinstance(models['mixed_float16'].optimizer, keras.optimizers.LossScaleOptimizer)
  assert models['mixed_float16'].network.conv.compute_dtype == 'float16'
  assert all(np.isfinite(float(v)) for v in logs['mixed_float16'].values())
  np.testing.assert_allclose(float(logs['mixed_float16']['loss']), float(logs['float32']['loss']), rtol=0.01)
  update32, update16 = (
      np.concatenate([np.ravel(w.numpy() - old) for w, old in zip(models[policy].network.trainable_weights, start)])
      for policy in ('float32', 'mixed_float16'))
  assert np.all(np.isfinite(update16)) and np.linalg.norm(update32) > 0
  assert np.linalg.norm(update16 - update32) < 0.02 * np.linalg.norm(update32)


MIRRORED_STEP = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import test_d3d_model as t
    data = np.load(sys.argv[1])
    batch = ({name: data[name] for name in data.files if name != 'labels'}, data['labels'])
    results, weights, initial = {}, {}, None
    for name, strategy in (('one_device', tf.distribute.get_strategy()),
                           ('mirrored', tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))):
      with strategy.scope():
        model = t.build_small_d3d(t.tiny_config())
        initial = initial or model.get_weights()
        model.set_weights(initial)
      dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
      logs = model.fit(dataset, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0).history
      results[name] = {'replicas': strategy.num_replicas_in_sync, 'logs': {k: v[0] for k, v in logs.items()}}
      weights.update({f'{name}/{i}': w for i, w in enumerate(model.get_weights())})
    weights.update({f'initial/{i}': w for i, w in enumerate(initial)})
    np.savez(sys.argv[2], **weights)
    print(json.dumps(results))
''')


def test_mirrored_step_over_two_cpus_matches_one_device(batch, tmp_path):
  """Same loss logs and same update of the D3D step: the loss is averaged over the global batch, not per replica.

  Each replica gets the same two videos (the batch is a, b, a, b), so per-replica batch norm sees the statistics of
  the whole batch and any difference comes from the loss scaling alone. The clips are uint8 with their flips and flow
  scales, as the input pipeline hands them over, so that these split over the replicas with their clips.
  """
  features, labels = batch
  half = as_uint8_batch({name: clips[:2] for name, clips in features.items()}, [True, False], [1.0, 0.8])
  batch_path, weights_path = tmp_path / 'batch.npz', tmp_path / 'weights.npz'
  np.savez(batch_path, labels=np.tile(labels[:2], 2), **{n: np.concatenate([c, c]) for n, c in half.items()})
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests_dir, os.path.dirname(tests_dir)]))
  process = subprocess.run([sys.executable, '-c', MIRRORED_STEP, str(batch_path), str(weights_path)],
                           capture_output=True, text=True, env=env, check=False)
  assert process.returncode == 0, process.stderr[-3000:]
  results = json.loads(process.stdout.strip().splitlines()[-1])
  one, mirrored = results['one_device'], results['mirrored']
  assert (one['replicas'], mirrored['replicas']) == (1, 2)
  for name in ('loss', 'cls_loss', 'distill_loss', 'top_1'):
    np.testing.assert_allclose(mirrored['logs'][name], one['logs'][name], rtol=1e-5)
  weights = np.load(weights_path)
  num_weights = len(weights.files) // 3
  updates = {name: [weights[f'{name}/{i}'] - weights[f'initial/{i}'] for i in range(num_weights)]
             for name in ('one_device', 'mirrored')}
  assert sum(bool(np.any(update)) for update in updates['one_device']) > num_weights // 3
  # Tolerance on the scale of the whole update.
  tolerance = 1e-4 * max(np.abs(update).max() for update in updates['one_device'])
  for one_update, mirrored_update in zip(updates['one_device'], updates['mirrored']):
    np.testing.assert_allclose(mirrored_update, one_update, atol=tolerance)
