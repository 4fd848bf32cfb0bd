"""Builds the networks and models of an experiment, checkpoints them, and restores trained networks.

A training checkpoint holds `network` (the run's inference network: the flow teacher, the RGB baseline or the D3D
student), `model` (the model's other weights: a D3D teacher, a distillation head), `optimizer` and `step`. Weights
are keyed by their Keras path (inside the network: `Mixed_4b/Branch_1/Conv2d_0b_3x3/temporal/kernel`, the TF-slim
scope names), not by Keras' object structure, whose lists of layers TensorFlow's checkpoints do not follow.
So any run's network restores on its own: as a teacher, an initialisation, for evaluation or export.
"""

import json
import os
from typing import Dict, Tuple

from absl import logging
import keras
import tensorflow as tf

from d3d_core import label_map
from official_d3d.configs import d3d_config
from official_d3d.modeling import d3d_model
from official_d3d.modeling.backbones import s3dg

INPUT_CHANNELS = {'rgb': 3, 'flow': 2}
IMPORTED_WEIGHTS_SUFFIX = '.weights.h5'


def stream_modality(stream: str) -> str:
  """The modality a stream's network reads at inference: the flow teacher reads flow, the others RGB."""
  return 'flow' if stream == 'flow' else 'rgb'


def train_modalities(stream: str) -> Tuple[str, ...]:
  """What training reads: the D3D student also needs flow, for its teacher."""
  return ('rgb', 'flow') if stream == 'd3d' else (stream_modality(stream),)


def resolve_num_classes(data_config: d3d_config.DataConfig) -> int:
  """`data.num_classes`, or the length of `data.label_map`; both given must agree."""
  from_label_map = len(label_map.read_label_map(data_config.label_map)) if data_config.label_map else 0
  if data_config.num_classes and from_label_map and data_config.num_classes != from_label_map:
    raise d3d_config.ConfigError(
        f'data.num_classes={data_config.num_classes} but {data_config.label_map} lists '
        f'{from_label_map} classes')
  num_classes = data_config.num_classes or from_label_map
  if num_classes < 1:
    raise d3d_config.ConfigError('set data.label_map (or data.num_classes): the number of classes is unknown')
  return num_classes


def build_network(config: d3d_config.ExperimentConfig, modality: str) -> keras.Model:
  """An S3D-G for one modality, built (weights created) so that checkpoints can be restored into it at once.

  The class count is `data.num_classes` (always set in a saved config), else the label map's.
  """
  num_classes = config.data.num_classes or resolve_num_classes(config.data)
  network = s3dg.build_s3dg(config.model, num_classes, INPUT_CHANNELS[modality], name=f's3dg_{modality}')
  network.build((None, None, None, None, INPUT_CHANNELS[modality]))
  return network


def build_model(config: d3d_config.ExperimentConfig) -> d3d_model.VideoClassifier:
  """The model a run trains: a one-stream classifier, or for 'd3d' the student with its restored, frozen teacher."""
  if config.stream == 'd3d' and not config.teacher_checkpoint:
    raise d3d_config.ConfigError('stream=d3d needs teacher_checkpoint: the model_dir of a trained flow stream')
  num_classes = resolve_num_classes(config.data)
  network = build_network(config, stream_modality(config.stream))
  if config.init_checkpoint:
    initialize_from(network, config.init_checkpoint)
  if config.stream != 'd3d':
    return d3d_model.VideoClassifier(network, stream_modality(config.stream), config.train.label_smoothing)
  teacher, teacher_config = restore_network(config.teacher_checkpoint)
  if teacher_config.stream != 'flow':
    raise d3d_config.ConfigError(
        f'teacher_checkpoint {config.teacher_checkpoint} holds a {teacher_config.stream!r} stream, '
        'not a flow teacher')
  if teacher_config.data.num_classes != num_classes:
    raise d3d_config.ConfigError(
        f'the teacher at {config.teacher_checkpoint} has {teacher_config.data.num_classes} classes, '
        f'this run {num_classes}')
  return d3d_model.D3DModel(network, teacher, config.distillation, config.train.label_smoothing)


def find_checkpoint(path: str) -> Tuple[str, str]:
  """(checkpoint prefix, model_dir) of a model_dir (its latest checkpoint) or of a checkpoint prefix in one."""
  if tf.io.gfile.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise FileNotFoundError(f'no checkpoint in {path}: has training saved one yet?')
    return prefix, path
  if not tf.io.gfile.exists(path + '.index'):
    raise FileNotFoundError(f'{path} is neither a model_dir nor a checkpoint prefix ({path}.index not found)')
  return path, os.path.dirname(path)


def variables_by_path(variables, scope: str = '') -> Dict[str, tf.Variable]:
  """{path: variable}, with the `scope/` prefix removed; paths must be unique."""
  prefix = scope + '/' if scope else ''
  named = {}
  for variable in variables:
    path = variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path
    if path in named:
      raise ValueError(f'two variables share the path {variable.path!r}: checkpoints could not tell them apart')
    named[path] = variable
  return named


def network_checkpoint(network: keras.Model) -> tf.train.Checkpoint:
  """The network's weights, keyed by their path inside it (the same whatever the network's name)."""
  return tf.train.Checkpoint(**variables_by_path(network.weights, network.name))


def training_checkpoint(model: d3d_model.VideoClassifier, step: tf.Variable) -> tf.train.Checkpoint:
  """Everything a resumed run needs: the network, the model's other weights, the optimizer state and the step."""
  network_weights = {id(w) for w in model.network.weights}
  other_weights = [w for w in model.weights if id(w) not in network_weights]
  # Optimizer variables by position: their paths start with the optimizer's name, which Keras numbers per process.
  optimizer_variables = {f'variable_{i:05d}': v for i, v in enumerate(model.optimizer.variables)}
  return tf.train.Checkpoint(network=network_checkpoint(model.network),
                             model=tf.train.Checkpoint(**variables_by_path(other_weights)),
                             optimizer=tf.train.Checkpoint(**optimizer_variables),
                             step=step)


def restore_weights(network: keras.Model, prefix: str) -> None:
  """Loads the `network` weights of the training checkpoint at `prefix`: the same weights, none missing or extra."""
  mismatch = f'checkpoint {prefix} does not match the network its config.json describes'
  num_saved = sum(name.startswith('network/') for name, _ in tf.train.list_variables(prefix))
  if num_saved != len(network.weights):
    raise d3d_config.ConfigError(f'{mismatch}: it holds {num_saved} network weights, the network has '
                                 f'{len(network.weights)}')
  status = tf.train.Checkpoint(network=network_checkpoint(network)).restore(prefix)
  status.expect_partial()
  try:
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as error:
    raise d3d_config.ConfigError(f'{mismatch}: {error}') from error


def _imported_network_config(path: str) -> d3d_config.ExperimentConfig:
  """The config of weights saved by `official_d3d.tools.import_slim_checkpoint`, from the `<name>.json` beside them."""
  description_path = path[:-len(IMPORTED_WEIGHTS_SUFFIX)] + '.json'
  if not tf.io.gfile.exists(description_path):
    raise FileNotFoundError(f'{description_path} not found: it describes the network of {path}')
  with tf.io.gfile.GFile(description_path) as f:
    description = json.load(f)
  try:
    config = d3d_config.ExperimentConfig(
        stream='flow' if description['input_channels'] == INPUT_CHANNELS['flow'] else 'rgb',
        data=d3d_config.DataConfig(num_classes=description['num_classes']),
        model=d3d_config.ModelConfig(**description['model']))
  except (KeyError, TypeError) as error:
    raise ValueError(f'{description_path} is not a network description of import_slim_checkpoint: {error}') from error
  if config.model.pixel_range not in d3d_config.PIXEL_RANGES:
    raise d3d_config.ConfigError(
        f'{description_path} does not say which pixel range the network expects (model.pixel_range): import the '
        f'checkpoint again, or add "pixel_range": one of {sorted(d3d_config.PIXEL_RANGES)} to its "model"')
  return config


def network_config(path: str) -> d3d_config.ExperimentConfig:
  """The config of the trained network at `path` (model_dir, checkpoint prefix or imported `.weights.h5`), without
  building it."""
  if path.endswith(IMPORTED_WEIGHTS_SUFFIX):
    return _imported_network_config(path)
  return d3d_config.load(find_checkpoint(path)[1])


def restore_network(path: str) -> Tuple[keras.Model, d3d_config.ExperimentConfig]:
  """(trained network, its config) from a model_dir, a checkpoint prefix, or imported TF-slim weights.

  The network is the run's inference network (for 'd3d' the RGB student), which answers a dict of 'logits' and
  'features': what teachers, initialisations, evaluation and export use. A model_dir or prefix needs the run's
  config.json beside the checkpoint; imported weights (`.weights.h5`, from `official_d3d.tools.import_slim_checkpoint`)
  the JSON description written next to them.
  """
  config = network_config(path)
  network = build_network(config, stream_modality(config.stream))
  if path.endswith(IMPORTED_WEIGHTS_SUFFIX):
    network.load_weights(path)
  else:
    restore_weights(network, find_checkpoint(path)[0])
  return network, config


def initialize_from(network: keras.Model, path: str) -> None:
  """Copies a trained network's weights into `network`, except those whose shapes differ (e.g. another class count).

  This is fine-tuning's start, e.g. UCF-101 from Kinetics-400. The architectures must otherwise be the same.
  """
  source, _ = restore_network(path)
  source_weights = variables_by_path(source.weights, source.name)
  weights = variables_by_path(network.weights, network.name)
  if set(source_weights) != set(weights):
    raise d3d_config.ConfigError(
        f'init_checkpoint {path}: its network has other layers than this one: the model settings differ')
  skipped = []
  for name, weight in weights.items():
    if tuple(source_weights[name].shape) == tuple(weight.shape):
      weight.assign(source_weights[name])
    else:
      skipped.append(name)
  if len(skipped) == len(weights):
    raise d3d_config.ConfigError(f'init_checkpoint {path}: no weight has the shape of this network\'s')
  logging.info('Initialised %d weights from %s; %d start fresh: %s', len(weights) - len(skipped), path,
               len(skipped), skipped)
