"""Builds the networks and models of an experiment, checkpoints them, and restores trained networks.

A training checkpoint holds `network` (the run's inference network: the flow teacher, the RGB baseline or the D3D
student), `model` (the model's other weights: a D3D teacher, a distillation head), `optimizer` and `step`. Weights
are keyed by their Keras path below the backbone or from the head (`Mixed_4b/Branch_1/Conv2d_0b_3x3/temporal/kernel`,
`Logits/Conv2d_0c_1x1/kernel`: the TF-slim scope names), not by Keras' object structure, whose lists of layers
TensorFlow's checkpoints do not follow, nor by the networks' names. So any run's network restores on its own: as a
teacher, an initialisation, for evaluation or export; and checkpoints written before the backbone and the head were
separate models load unchanged.
"""

import os
from typing import Dict, Tuple

from absl import logging
import keras
import tensorflow as tf

from d3d_core import json_files
from d3d_core import label_map
from d3d_core import network_inputs
from official_d3d.configs import d3d_config
from official_d3d.modeling import classification_network
from official_d3d.modeling import d3d_model
from official_d3d.modeling.backbones import s3dg

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


def build_s3dg(model_config: d3d_config.ModelConfig, num_classes: int, input_channels: int = 3,
               weight_decay: float = 0.0, name: str = 's3dg') -> classification_network.VideoClassificationNetwork:
  """An S3D-G classification network (backbone and head), built: its weights exist, ready for a checkpoint."""
  backbone = s3dg.S3DG(input_channels, first_temporal_kernel_size=model_config.first_temporal_kernel_size,
                       temporal_conv_startat=model_config.temporal_conv_startat,
                       gating_startat=model_config.gating_startat, depth_multiplier=model_config.depth_multiplier,
                       min_depth=model_config.min_depth, weight_decay=weight_decay,
                       batch_norm_momentum=model_config.batch_norm_momentum, name='backbone')
  network = classification_network.VideoClassificationNetwork(backbone, num_classes, model_config.dropout_rate,
                                                              weight_decay, name=name)
  network.build((None, None, None, None, input_channels))
  return network


def build_network(config: d3d_config.ExperimentConfig, modality: str) -> keras.Model:
  """The S3D-G of an experiment for one modality. The class count is `data.num_classes` (always set in a saved
  config), else the label map's."""
  num_classes = config.data.num_classes or resolve_num_classes(config.data)
  return build_s3dg(config.model, num_classes, network_inputs.MODALITIES[modality].channels, name=f's3dg_{modality}')


def build_model(config: d3d_config.ExperimentConfig) -> d3d_model.VideoClassifier:
  """The model a run trains: a one-stream classifier, or for 'd3d' the student with its restored, frozen teacher.
  `model.pixel_range` (empty: [-1, 1]) is what the training step scales uint8 RGB clips to."""
  if config.stream == 'd3d' and not config.teacher_checkpoint:
    raise d3d_config.ConfigError('stream=d3d needs teacher_checkpoint: the model_dir of a trained flow stream')
  num_classes = resolve_num_classes(config.data)
  pixel_range = config.model.pixel_range or d3d_config.DEFAULT_PIXEL_RANGE
  network = build_network(config, stream_modality(config.stream))
  if config.init_checkpoint:
    initialize_from(network, config.init_checkpoint)
  if config.stream != 'd3d':
    return d3d_model.VideoClassifier(network, stream_modality(config.stream), config.train.label_smoothing,
                                     pixel_range)
  teacher, teacher_config = restore_network(config.teacher_checkpoint)
  if teacher_config.stream != 'flow':
    raise d3d_config.ConfigError(
        f'teacher_checkpoint {config.teacher_checkpoint} holds a {teacher_config.stream!r} stream, '
        'not a flow teacher')
  if teacher_config.data.num_classes != num_classes:
    raise d3d_config.ConfigError(
        f'the teacher at {config.teacher_checkpoint} has {teacher_config.data.num_classes} classes, '
        f'this run {num_classes}')
  try:
    return d3d_model.D3DModel(network, teacher, config.distillation, config.train.label_smoothing, pixel_range)
  except ValueError as error:  # distillation settings that these two networks cannot follow
    raise d3d_config.ConfigError(str(error)) from None


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
  """{path: variable}, each path cut after its first `scope` component (if it has one); paths must be unique."""
  named = {}
  for variable in variables:
    parts = variable.path.split('/')
    path = '/'.join(parts[parts.index(scope) + 1:] if scope in parts else parts)
    if path in named:
      raise ValueError(f'two variables share the path {variable.path!r}: checkpoints could not tell them apart')
    named[path] = variable
  return named


def network_variables(network: classification_network.VideoClassificationNetwork) -> Dict[str, tf.Variable]:
  """The network's weights by their TF-slim scope names: the backbone's below it, the head's from `Logits/` on."""
  return {**variables_by_path(network.backbone.weights, network.backbone.name),
          **variables_by_path(network.head.weights, network.name)}


def network_checkpoint(network: classification_network.VideoClassificationNetwork) -> tf.train.Checkpoint:
  """The network's weights, keyed the same whatever the network's or its backbone's name."""
  return tf.train.Checkpoint(**network_variables(network))


def _model_variables(model: d3d_model.VideoClassifier) -> Dict[str, tf.Variable]:
  """The model's weights outside its network (a D3D teacher, a distillation head), by path; a network among them by
  `<its name>/<its network_variables name>`."""
  named = {}
  for layer in model.layers:
    if layer is model.network:
      continue
    if isinstance(layer, classification_network.VideoClassificationNetwork):
      named.update({f'{layer.name}/{path}': variable for path, variable in network_variables(layer).items()})
    else:
      named.update(variables_by_path(layer.weights))
  return named


def training_checkpoint(model: d3d_model.VideoClassifier, step: tf.Variable) -> tf.train.Checkpoint:
  """Everything a resumed run needs: the network, the model's other weights, the optimizer state and the step."""
  # Optimizer variables by position: their paths start with the optimizer's name, which Keras numbers per process.
  optimizer_variables = {f'variable_{i:05d}': v for i, v in enumerate(model.optimizer.variables)}
  return tf.train.Checkpoint(network=network_checkpoint(model.network),
                             model=tf.train.Checkpoint(**_model_variables(model)),
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
  description = json_files.read_json(description_path)
  try:
    config = d3d_config.ExperimentConfig(
        stream='flow' if description['input_channels'] == network_inputs.MODALITIES['flow'].channels else 'rgb',
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
  source_weights = network_variables(source)
  weights = network_variables(network)
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
