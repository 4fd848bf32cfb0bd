r"""Exports a trained network as a versioned SavedModel that TF Serving loads as it is.

  python -m official_d3d.export_saved_model --model_dir=/tmp/ucf101_d3d --export_dir=/tmp/serving/d3d

writes `/tmp/serving/d3d/<version>/saved_model.pb` (version: the next integer unless `--version` says otherwise);
serve it with `tensorflow_model_server --model_name=d3d --model_base_path=/tmp/serving/d3d`. The version is written
to a hidden temporary folder and renamed when complete, so a server polling the base folder never loads half of it
(on local and POSIX file systems; on object stores such as gs:// a rename copies objects one by one).

Everything is checked before anything is written, and the command line answers a problem with one `error:` line
(exit status 1; `d3d_core.cli`): no checkpoint or config.json in --model_dir, an existing or negative --version, an
export_dir that is a file or cannot be written, a missing label map, or weights holding NaN or Inf (a diverged run,
whose SavedModel would answer nonsense).

A D3D student or an RGB baseline takes RGB frames only: no optical flow anywhere. A flow teacher takes flow images as
`tfrecord_tools` stores them: uint8 (x, y, 0) quantised from +-bound pixels. Signatures:

  serving_default         `video` (`flow` for a flow teacher): uint8 [batch, frames, height, width, 3]
  serve_jpeg              `frames`: string [batch, frames], JPEG- (or PNG-) encoded frames (base64 over REST)
  serve_sequence_example  `sequence_example`: string [batch], serialized tf.train.SequenceExample of tfrecord_tools

Each returns `logits` float32 [batch, classes], `probabilities` float32 [batch, classes], `top_k_indices` int32
[batch, k] and `top_k_labels` string [batch, k] (class names from the label map, stored as `assets/label_map.txt`).

Inside the graph, each video goes through evaluation's own view function (`video_input.eval_views`, one clip and one
crop): the centre clip of `num_frames` frames at the training stride (short videos loop), frames scaled as the network
was trained (RGB per `model.pixel_range`: [-1, 1], or [0, 1] for the authors' released checkpoints; flow's +-bound
pixels to [-1, 1]), short side resized to `resize`, centre crop of `crop_size`. Any frame count >= 1 and any frame
size are accepted. The input shapes are left open in the signatures so that every runtime (TF Serving,
`saved_model_cli`, Python) reaches the in-graph checks, whose errors say what was expected: a wrong rank, channel
count, no frames, undecodable images.
"""

# First, before anything imports TensorFlow (also in worker processes, which 'spawn' starts from this module as
# __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import dataclasses
import os
import tempfile
import uuid
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from d3d_core import cli
from d3d_core import label_map
from d3d_core import network_inputs
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from official_d3d.modeling import factory

VIDEO_SIGNATURE = 'serving_default'
JPEG_SIGNATURE = 'serve_jpeg'
SEQUENCE_EXAMPLE_SIGNATURE = 'serve_sequence_example'
JPEG_INPUT = 'frames'
SEQUENCE_EXAMPLE_INPUT = 'sequence_example'
LABEL_MAP_ASSET = label_map.FILENAME
STORED_CHANNELS = 3  # RGB frames, and flow images (x, y, 0) as tfrecord_tools stores them

_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
_WEIGHTS_NAMED = 3  # non-finite weights an error names


def video_input_name(modality: str) -> str:
  """Name of the uint8 input of `serving_default`: `video` for RGB networks, `flow` for a flow teacher."""
  return 'flow' if modality == 'flow' else 'video'


@dataclasses.dataclass(frozen=True)
class ServingConfig:
  """What the serving graph feeds the network; 0 takes the training run's evaluation setting."""
  num_frames: int = 0  # frames per clip (data.num_frames)
  crop_size: int = 0  # side of the centre crop (data.crop_size)
  resize: int = 0  # short side before the centre crop (data.eval_resize)
  top_k: int = 5  # classes in top_k_indices / top_k_labels (at most the class count)


def serving_data_config(data_config: d3d_config.DataConfig, serving: ServingConfig) -> d3d_config.DataConfig:
  """The evaluation settings of one centre view per video, with the serving overrides; checks they can work."""
  data_config = dataclasses.replace(
      data_config, num_frames=serving.num_frames or data_config.num_frames,
      crop_size=serving.crop_size or data_config.crop_size, eval_resize=serving.resize or data_config.eval_resize,
      num_eval_clips=1, num_eval_crops=1)
  if data_config.num_frames < 1 or data_config.crop_size < 1 or serving.top_k < 1:
    raise d3d_config.ConfigError(f'num_frames, crop_size and top_k must be positive, got {data_config.num_frames}, '
                                 f'{data_config.crop_size} and {serving.top_k}')
  data_config.check_resize(training=False)
  return data_config


def _assert(condition, message: str, *data) -> tf.Operation:
  return tf.debugging.Assert(condition, [message, *data], summarize=16)


def _after(checks: Sequence[tf.Operation], tensor) -> tf.Tensor:
  """`tensor`, computed only once the checks have passed (so later checks never see a malformed input)."""
  with tf.control_dependencies(checks):
    return tf.identity(tensor)


def check_rank(tensor, rank: int, layout: str) -> tf.Tensor:
  """`tensor` once its rank is checked, with that rank static; the error names the expected layout and shows the
  shape received."""
  shape = tf.shape(tensor)
  check = _assert(tf.equal(tf.size(shape), rank), f'{layout}: expected rank {rank}; got shape', shape)
  return tf.ensure_shape(_after([check], tensor), [None] * rank)


def check_video(video, signature: str, input_name: str, num_frames: int) -> tf.Tensor:
  """uint8 `[B, T, H, W, 3]` once rank, channels, frame count and frame size are checked, in this order."""
  layout = f'{signature}: {input_name} must be uint8 [batch, frames, height, width, {STORED_CHANNELS}]'
  video = check_rank(video, 5, layout)
  shape = tf.shape(video)  # runs after the rank check: it has 5 entries
  video = _after([_assert(tf.equal(shape[4], STORED_CHANNELS),
                          f'{layout}: expected {STORED_CHANNELS} channels in the last dimension; got shape', shape)],
                 video)
  video = _after([_assert(shape[1] >= 1, f'{layout}: expected at least 1 frame per video (the model samples '
                          f'{num_frames}, looping shorter videos); got shape', shape)], video)
  return _after([_assert(tf.logical_and(shape[2] >= 1, shape[3] >= 1),
                         f'{layout}: expected frames of at least 1x1 pixels; got shape', shape)], video)


def check_encoded_frames(encoded, layout: str) -> tf.Tensor:
  """String frames of any shape once each is checked to start as a JPEG or a PNG; the error lists the others."""
  is_image = tf.logical_or(tf.equal(tf.strings.substr(encoded, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC),
                           tf.equal(tf.strings.substr(encoded, 0, len(_PNG_MAGIC)), _PNG_MAGIC))
  check = _assert(tf.reduce_all(is_image), f'{layout}: expected JPEG- or PNG-encoded frames; these are neither, at '
                  'positions:', tf.where(tf.logical_not(is_image)))
  return _after([check], encoded)


def check_frame_count(encoded, layout: str, num_frames: int) -> tf.Tensor:
  """Encoded frames `[B, T]` or `[T]` once the videos are checked to have at least one frame."""
  check = _assert(tf.shape(encoded)[-1] >= 1, f'{layout}: expected at least 1 frame per video (the model samples '
                  f'{num_frames}, looping shorter videos); got shape', tf.shape(encoded))
  return _after([check], encoded)


class ServingGraph:
  """The preprocessing and prediction of the three signatures, around one trained network."""

  def __init__(self, network: keras.Model, modality: str, data_config: d3d_config.DataConfig, top_k: int,
               class_names: tf.lookup.StaticHashTable, pixel_range: str):
    self.network = network
    self.modality_name = modality
    self.modality = network_inputs.MODALITIES[modality]
    self.data_config = data_config
    self.pixel_range = pixel_range
    self.top_k = min(top_k, network.num_classes)
    self.class_names = class_names
    # One traced function that the three signatures call: the SavedModel holds the network's graph once.
    self.predict = tf.function(self._predict, input_signature=[tf.TensorSpec([None, *self._clip_spec().shape],
                                                                             tf.float32)], autograph=False)

  def _clip_spec(self) -> tf.TensorSpec:
    size = self.data_config.crop_size
    return tf.TensorSpec([self.data_config.num_frames, size, size, self.modality.channels], tf.float32)

  def _predict(self, clips) -> Dict[str, tf.Tensor]:
    """Network clips `[B, T, S, S, C]` -> the signature outputs."""
    logits = tf.cast(self.network(clips, training=False)['logits'], tf.float32)
    probabilities = tf.nn.softmax(logits)
    top = tf.math.top_k(probabilities, k=self.top_k)
    return {'logits': logits, 'probabilities': probabilities, 'top_k_indices': top.indices,
            'top_k_labels': self.class_names.lookup(tf.cast(top.indices, tf.int64))}

  def _capture_by_name(self) -> None:
    """Captures what `predict` reads (the network's variables, the label table) under names a SavedModel keeps.
    Left to tracing, they are numbered, and `tf.saved_model.save` logs each signature's hundreds of renames."""
    graph = tf.compat.v1.get_default_graph()  # the signature function's, being traced
    for index, tensor in enumerate(self.predict.get_concrete_function().captured_inputs):
      graph.capture(tensor, name=f'captured_{index}')

  def clip(self, video) -> tf.Tensor:
    """One video, uint8 `[T, H, W, 3]` or encoded frames `[T]`, -> the network's clip: its evaluation view."""
    indices = video_input.eval_clip_indices(tf.shape(video)[0], self.data_config)
    return video_input.eval_views(video, indices, self.data_config, self.modality, self.pixel_range)[0]

  def serve_video(self, video) -> Dict[str, tf.Tensor]:
    self._capture_by_name()
    video = check_video(video, VIDEO_SIGNATURE, video_input_name(self.modality_name), self.data_config.num_frames)
    return self.predict(tf.map_fn(self.clip, video, fn_output_signature=self._clip_spec()))

  def serve_jpeg(self, frames) -> Dict[str, tf.Tensor]:
    self._capture_by_name()
    layout = f'{JPEG_SIGNATURE}: {JPEG_INPUT} must be string [batch, frames] of encoded images'
    frames = check_rank(frames, 2, layout)
    frames = check_frame_count(frames, layout, self.data_config.num_frames)
    frames = check_encoded_frames(frames, layout)
    return self.predict(tf.map_fn(self.clip, frames, fn_output_signature=self._clip_spec()))

  def sequence_example_clip(self, serialized) -> tf.Tensor:
    """One serialized SequenceExample -> the network's clip, from the frames stored for this network's modality."""
    key = self.modality.feature_key
    _, sequences = tf.io.parse_single_sequence_example(
        serialized, sequence_features={key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)})
    layout = f'{SEQUENCE_EXAMPLE_SIGNATURE}: each SequenceExample must store encoded frames under {key!r}'
    encoded = check_frame_count(sequences[key], layout, self.data_config.num_frames)
    return self.clip(check_encoded_frames(encoded, layout))

  def serve_sequence_example(self, serialized) -> Dict[str, tf.Tensor]:
    self._capture_by_name()
    serialized = check_rank(serialized, 1, f'{SEQUENCE_EXAMPLE_SIGNATURE}: {SEQUENCE_EXAMPLE_INPUT} must be string '
                            '[batch] of serialized tf.train.SequenceExample')
    return self.predict(tf.map_fn(self.sequence_example_clip, serialized, fn_output_signature=self._clip_spec()))


def build_serving_module(network: keras.Model, modality: str, data_config: d3d_config.DataConfig, top_k: int,
                         label_map_path: str, pixel_range: str) -> Tuple[tf.Module, Dict[str, Callable]]:
  """(a tf.Module holding the network's variables and the label map asset, {signature name: concrete function}).

  RGB frames are scaled to the network's `pixel_range` (`model.pixel_range` of its run), as in its training.

  Only the network's tf.Variables are tracked, not the Keras object graph: the SavedModel needs nothing else and
  saves faster. They must be the tf.Variables the functions capture (`.value` of a Keras variable), not their Keras
  wrappers, or a TF1-style loader (TF Serving, `saved_model_cli run`) restores values the graph never reads.
  """
  module = tf.Module(name='d3d_serving')
  module.network_variables = [weight.value for weight in network.weights]
  module.label_map = tf.saved_model.Asset(label_map_path)
  module.class_names = tf.lookup.StaticHashTable(
      tf.lookup.TextFileInitializer(module.label_map, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                                    tf.lookup.TextFileIndex.WHOLE_LINE),
      default_value='')
  graph = ServingGraph(network, modality, data_config, top_k, module.class_names, pixel_range)
  specs = {
      VIDEO_SIGNATURE: (graph.serve_video, tf.TensorSpec(None, tf.uint8, name=video_input_name(modality))),
      JPEG_SIGNATURE: (graph.serve_jpeg, tf.TensorSpec(None, tf.string, name=JPEG_INPUT)),
      SEQUENCE_EXAMPLE_SIGNATURE: (graph.serve_sequence_example,
                                   tf.TensorSpec(None, tf.string, name=SEQUENCE_EXAMPLE_INPUT)),
  }
  signatures = {name: tf.function(fn, input_signature=[spec], autograph=False).get_concrete_function()
                for name, (fn, spec) in specs.items()}
  return module, signatures


class ExportError(Exception):
  """The export cannot go ahead: weights a diverged run left, or an export_dir that cannot take a version. The
  command line prints the message alone."""


def next_version(export_dir: str) -> int:
  """One more than the largest integer version under `export_dir` (1 for a new folder)."""
  if not tf.io.gfile.isdir(export_dir):
    return 1
  versions = [int(name.rstrip('/')) for name in tf.io.gfile.listdir(export_dir) if name.rstrip('/').isdigit()]
  return max(versions, default=0) + 1


def new_version_path(export_dir: str, version: Optional[int] = None) -> str:
  """`<export_dir>/<version>` (default: the next version), checked to be a new version in a folder."""
  if tf.io.gfile.exists(export_dir) and not tf.io.gfile.isdir(export_dir):
    raise ExportError(f'export_dir {export_dir} is a file: give a folder (versions are written under it)')
  version = next_version(export_dir) if version is None else version
  if version < 0:
    raise d3d_config.ConfigError(f'version must be a non-negative integer, got {version}')
  path = os.path.join(export_dir, str(version))
  if tf.io.gfile.exists(path):
    raise FileExistsError(f'{path} exists: choose another --version (versions are never overwritten)')
  return path


def resolve_class_names(config: d3d_config.ExperimentConfig, num_classes: int,
                        label_map_path: Optional[str] = None) -> List[str]:
  """Class names from `label_map_path`, else the run's `data.label_map`; `class_<i>` when the run had none."""
  path = label_map_path or config.data.label_map
  if not path:
    logging.warning('No label map for this run: top_k_labels will read class_0 ... class_%d', num_classes - 1)
    return [f'class_{index}' for index in range(num_classes)]
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'label map {path} not found (moved since training?): pass --label_map')
  names = label_map.read_label_map(path)
  if len(names) != num_classes:
    raise d3d_config.ConfigError(f'label map {path} lists {len(names)} classes, the network predicts {num_classes}')
  return names


def non_finite_weights(network: keras.Model) -> List[str]:
  """Paths (as checkpoints name them) of the weights of `network` that hold a NaN or an infinity."""
  weights = factory.network_variables(network)
  return [path for path, weight in weights.items() if not np.isfinite(weight.numpy()).all()]


def check_finite_weights(network: keras.Model, source: str) -> None:
  """Refuses the weights a diverged run leaves: served, they would answer NaN, or one class, for every video."""
  bad = non_finite_weights(network)
  if bad:
    named = ', '.join(bad[:_WEIGHTS_NAMED]) + (', ...' if len(bad) > _WEIGHTS_NAMED else '')
    raise ExportError(
        f'{source}: {len(bad)} of {len(network.weights)} weights hold NaN or Inf ({named}): the training run '
        'diverged. Export an earlier checkpoint (its prefix as --model_dir) or train again, e.g. with a lower '
        'learning rate; nothing was exported')


def make_staging_dir(path: str) -> str:
  """Creates the hidden folder that version `path` is written to before its rename (servers ignore the name: it is
  not an integer); ExportError when the export_dir cannot be written."""
  export_dir, version = os.path.split(path)
  staging = os.path.join(export_dir, f'.tmp-{version}-{uuid.uuid4().hex}')
  try:
    tf.io.gfile.makedirs(staging)
  except (tf.errors.OpError, OSError) as error:
    raise ExportError(f'cannot write to export_dir {export_dir}: {error}') from error
  return staging


def export_network(network: keras.Model, config: d3d_config.ExperimentConfig, export_dir: str,
                   version: Optional[int] = None, serving: ServingConfig = ServingConfig(),
                   label_map_path: Optional[str] = None, source: Optional[str] = None) -> str:
  """Writes `<export_dir>/<version>/` for `network` of the run `config`; returns that path.

  Everything is checked before anything is written: the serving settings, the version (FileExistsError rather
  than replace a version a server may be serving), the label map, and the weights (ExportError for NaN or Inf,
  naming `source`: where the weights come from, by default the run's model_dir).
  """
  modality = factory.stream_modality(config.stream)
  data_config = serving_data_config(config.data, serving)
  path = new_version_path(export_dir, version)
  class_names = resolve_class_names(config, network.num_classes, label_map_path)
  check_finite_weights(network, source or config.model_dir or 'the network')

  staging = make_staging_dir(path)
  try:
    with tempfile.TemporaryDirectory() as assets:
      asset_path = os.path.join(assets, LABEL_MAP_ASSET)
      label_map.write_label_map(class_names, asset_path)
      module, signatures = build_serving_module(network, modality, data_config, serving.top_k, asset_path,
                                                config.model.pixel_range)
      tf.saved_model.save(module, staging, signatures=signatures)
    tf.io.gfile.rename(staging, path)
  finally:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
  logging.info('Exported the %s network of %s (%d frames, %d px crop) to %s', config.stream,
               config.model_dir or 'its run', data_config.num_frames, data_config.crop_size, path)
  return path


def weights_source(model_dir: str) -> str:
  """How errors name the weights that `export` reads from `model_dir`: for a model_dir, its latest checkpoint."""
  if model_dir.endswith(factory.IMPORTED_WEIGHTS_SUFFIX):
    return model_dir
  return f'checkpoint {factory.find_checkpoint(model_dir)[0]}'


def export(model_dir: str, export_dir: str, version: Optional[int] = None, serving: ServingConfig = ServingConfig(),
           label_map_path: Optional[str] = None) -> str:
  """Exports the network of a training run (model_dir, checkpoint prefix, or imported `.weights.h5`): for 'd3d' the
  RGB student, for 'rgb' the baseline, for 'flow' the teacher. Returns `<export_dir>/<version>`."""
  new_version_path(export_dir, version)  # a destination that cannot work fails before the network's slow restore
  network, config = factory.restore_network(model_dir)
  return export_network(network, config, export_dir, version, serving, label_map_path, weights_source(model_dir))


def define_flags() -> None:
  flags.DEFINE_string('model_dir', None, 'Training model_dir (or checkpoint prefix, or imported .weights.h5).')
  flags.DEFINE_string('export_dir', None, 'Base folder of the served model: versions are written under it.')
  flags.DEFINE_integer('version', None, 'Version number (a subfolder); default: the next integer.')
  defaults = ServingConfig()
  flags.DEFINE_integer('num_frames', defaults.num_frames, 'Frames per clip; 0: data.num_frames of the run.')
  flags.DEFINE_integer('crop_size', defaults.crop_size, 'Centre crop side; 0: data.crop_size of the run.')
  flags.DEFINE_integer('resize', defaults.resize, 'Short side before the crop; 0: data.eval_resize of the run.')
  flags.DEFINE_integer('top_k', defaults.top_k, 'Classes returned in top_k_indices and top_k_labels.')
  flags.DEFINE_string('label_map', None, 'Label map file; default: data.label_map of the run.')
  flags.mark_flags_as_required(['model_dir', 'export_dir'])


def main(argv):
  del argv  # Everything comes in through flags.
  values = flags.FLAGS
  serving = ServingConfig(num_frames=values.num_frames, crop_size=values.crop_size, resize=values.resize,
                          top_k=values.top_k)
  print(f'exporting {values.model_dir} (tracing and saving take a minute)', flush=True)
  print(export(values.model_dir, values.export_dir, values.version, serving, values.label_map))


if __name__ == '__main__':
  define_flags()
  # OSError: a missing model_dir, checkpoint, config.json or label map, an existing version, a file system refusing.
  cli.run_main(main, (d3d_config.ConfigError, label_map.LabelMapError, ExportError),
               interrupted='nothing half-written is left (a version folder appears only once complete)')
