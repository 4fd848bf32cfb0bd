"""Networks from configs, checkpoints keyed by weight path, restoring, fine-tuning starts and imported weights."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from official_d3d.configs import d3d_config
from official_d3d.modeling import d3d_model
from official_d3d.modeling import factory

CLASSIFIER = 'Logits/Conv2d_0c_1x1/'


def tiny_config(stream='flow', num_classes=3, model_dir='') -> d3d_config.ExperimentConfig:
  return d3d_config.ExperimentConfig(
      stream=stream, model_dir=str(model_dir), data=d3d_config.DataConfig(num_classes=num_classes),
      model=d3d_config.ModelConfig(depth_multiplier=0.1, min_depth=8))


def randomize(network, seed):
  """Distinct values in every weight (fresh networks share zeros and ones in batch norm)."""
  rng = np.random.default_rng(seed)
  for weight in network.weights:
    weight.assign(rng.normal(size=weight.shape).astype(np.float32))


def save_run(config, network, step=7):
  """A model_dir as a training run leaves it: config.json and a checkpoint holding the network."""
  d3d_config.save(config, config.model_dir)
  checkpoint = tf.train.Checkpoint(network=factory.network_checkpoint(network))
  tf.train.CheckpointManager(checkpoint, config.model_dir, max_to_keep=1).save(checkpoint_number=step)


@pytest.fixture(scope='module')
def flow_run(tmp_path_factory):
  config = tiny_config('flow', model_dir=tmp_path_factory.mktemp('flow'))
  network = factory.build_network(config, 'flow')
  randomize(network, seed=0)
  save_run(config, network)
  return config, network


def test_restored_network_has_every_saved_weight_whatever_its_name(flow_run):
  config, saved = flow_run
  restored, restored_config = factory.restore_network(config.model_dir)
  assert restored_config == config
  assert restored.input_channels == 2
  names = factory.network_variables(saved)
  # The TF-slim scope names: the keys of checkpoints from before the backbone and the head were separate models.
  assert {'Mixed_4b/Branch_1/Conv2d_0b_3x3/temporal/kernel', 'Logits/Conv2d_0c_1x1/kernel'} <= set(names)
  assert len(names) == len(saved.weights)
  for name, weight in factory.network_variables(restored).items():
    np.testing.assert_array_equal(weight.numpy(), names[name].numpy())
  prefix, model_dir = factory.find_checkpoint(config.model_dir)
  assert prefix.endswith('ckpt-7') and model_dir == config.model_dir
  assert factory.find_checkpoint(prefix) == (prefix, config.model_dir)


def test_a_checkpoint_of_another_architecture_is_refused(flow_run, tmp_path):
  config, _ = flow_run
  other = dataclasses.replace(config, model=dataclasses.replace(config.model, gating_startat=''))
  prefix, _ = factory.find_checkpoint(config.model_dir)
  with pytest.raises(ValueError, match='does not match'):
    factory.restore_weights(factory.build_network(other, 'flow'), prefix)
  with pytest.raises(FileNotFoundError, match='neither a model_dir nor a checkpoint'):
    factory.find_checkpoint(str(tmp_path / 'missing'))


def test_init_checkpoint_copies_all_but_the_classifier_of_another_class_count(flow_run):
  source_config, source = flow_run
  config = tiny_config('flow', num_classes=5)
  config.init_checkpoint = source_config.model_dir
  model = factory.build_model(config)
  assert isinstance(model, d3d_model.VideoClassifier) and model.modality == 'flow'
  source_weights = factory.variables_by_path(source.weights, source.name)
  for name, weight in factory.variables_by_path(model.network.weights, model.network.name).items():
    if name.startswith(CLASSIFIER):
      assert weight.shape[-1] == 5  # starts fresh
    else:
      np.testing.assert_array_equal(weight.numpy(), source_weights[name].numpy())


@pytest.mark.slow
def test_d3d_model_gets_the_restored_teacher_and_refuses_a_non_flow_one(flow_run, tmp_path):
  flow_config, flow_network = flow_run
  config = tiny_config('d3d')
  config.teacher_checkpoint = flow_config.model_dir
  config.model.pixel_range = 'zero_to_one'
  model = factory.build_model(config)
  assert isinstance(model, d3d_model.D3DModel) and not model.teacher.trainable_weights
  assert model.pixel_range == 'zero_to_one'  # what its training step scales uint8 RGB clips to
  np.testing.assert_array_equal(model.teacher.weights[0].numpy(), flow_network.weights[0].numpy())
  rgb_config = tiny_config('rgb', model_dir=tmp_path / 'rgb')
  save_run(rgb_config, factory.build_network(rgb_config, 'rgb'))
  config.teacher_checkpoint = rgb_config.model_dir
  with pytest.raises(ValueError, match='not a flow teacher'):
    factory.build_model(config)


@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')  # Keras' own save_weights
@pytest.mark.slow
def test_imported_slim_weights_load_with_their_description_and_pixel_range(tmp_path):
  """The layout `official_d3d.tools.import_slim_checkpoint` writes: `<name>.weights.h5` and `<name>.json`."""
  config = tiny_config('rgb', num_classes=4)
  config.model.pixel_range = 'zero_to_one'
  network = factory.build_network(config, 'rgb')
  randomize(network, seed=1)
  path = str(tmp_path / 's3dg_rgb.weights.h5')
  network.save_weights(path)
  with open(tmp_path / 's3dg_rgb.json', 'w') as f:
    json.dump({'model': dataclasses.asdict(config.model), 'num_classes': 4, 'input_channels': 3}, f)
  restored, restored_config = factory.restore_network(path)
  assert (restored_config.stream, restored_config.data.num_classes) == ('rgb', 4)
  assert restored_config.model.pixel_range == 'zero_to_one'
  for a, b in zip(network.weights, restored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # A description that does not say how its network scales pixels is refused, not guessed.
  with open(tmp_path / 's3dg_rgb.json', 'w') as f:
    json.dump({'model': {'depth_multiplier': 0.1, 'min_depth': 8}, 'num_classes': 4, 'input_channels': 3}, f)
  with pytest.raises(d3d_config.ConfigError, match=f'{tmp_path / "s3dg_rgb.json"} does not say which pixel range'):
    factory.restore_network(path)


def test_a_run_saved_before_pixel_range_existed_loads_as_minus_one_to_one(tmp_path):
  config = tiny_config('rgb', model_dir=tmp_path)
  path = d3d_config.save(config, str(tmp_path))
  values = json.loads(open(path).read())
  del values['model']['pixel_range']
  with open(path, 'w') as f:
    json.dump(values, f)
  assert d3d_config.load(str(tmp_path)).model.pixel_range == 'minus_one_to_one'


def test_num_classes_come_from_the_label_map_and_must_agree(tmp_path):
  path = tmp_path / 'label_map.txt'
  path.write_text('run\njump\n')
  assert factory.resolve_num_classes(d3d_config.DataConfig(label_map=str(path))) == 2
  with pytest.raises(ValueError, match='lists 2 classes'):
    factory.resolve_num_classes(d3d_config.DataConfig(label_map=str(path), num_classes=3))
  with pytest.raises(ValueError, match='number of classes is unknown'):
    factory.resolve_num_classes(d3d_config.DataConfig())
