r"""Loads a TF-slim S3D-G checkpoint (the released S3D-G and D3D weights) into a Keras S3D-G network; saves its weights.

    python -m official_d3d.tools.import_slim_checkpoint --checkpoint=/path/model.ckpt --output=/path/s3dg.weights.h5

The architecture options (classes, input channels, first temporal kernel, where temporal convolutions and gating
start) are read from the checkpoint's variable shapes and names unless given as flags. The JSON written beside the
weights also records `--pixel_range`, what RGB 0..255 becomes at the network's input; its default, zero_to_one, is
what the authors' own helper for the released checkpoints feeds (princeton-vl/d3dhelper: `image / 255`; see
BUILD_NOTES.md). Training from, evaluating and exporting these weights all scale RGB that way. Every checkpoint
variable that was not used and every model weight left unset is reported; the exit status is 1 if a model weight is
left unset. A `.weights.h5` follows the Keras network's structure: files imported before the backbone and the head
became separate models (December 2026) no longer load; run this command again on the slim checkpoint.

The mapping (TF-slim's variable names), with `<unit>` a conv unit's scope such as `Mixed_4b/Branch_1/Conv2d_0b_3x3`:
  <unit>/conv/kernel                         <- InceptionV1/<unit>/weights
  <unit>/BatchNorm/{beta,moving_mean,moving_variance}  <- InceptionV1/<unit>/BatchNorm/{same}
  <unit>/temporal/{kernel,bias}              <- InceptionV1/<unit>/temporal/{weights,biases}
  <unit>/self_gating/transformer_W/kernel    <- InceptionV1/<unit>/self_gating/transformer_W/weights
  Logits/Conv2d_0c_1x1/{kernel,bias}         <- InceptionV1/Logits/Conv2d_0c_1x1/{weights,biases}
Both sides store kernels as [time, height, width, in, out], so values are copied unchanged.
"""

import dataclasses
import os
import sys
from typing import Dict, Iterator, List, Tuple

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from d3d_core import json_files
from official_d3d.configs import d3d_config
from official_d3d.modeling import classification_network
from official_d3d.modeling import factory
from official_d3d.modeling.backbones import s3dg

SCOPE = 'InceptionV1'
MOVING_AVERAGE_SUFFIX = '/ExponentialMovingAverage'


def _unit_variables(unit: s3dg.Unit3D, scope: str) -> Iterator[Tuple[str, tf.Variable]]:
  yield f'{scope}/weights', unit.conv.kernel
  for name in ('beta', 'moving_mean', 'moving_variance'):
    yield f'{scope}/BatchNorm/{name}', getattr(unit.batch_norm, name)
  if unit.temporal is not None:
    yield f'{scope}/temporal/weights', unit.temporal.kernel
    yield f'{scope}/temporal/biases', unit.temporal.bias
  if unit.gating is not None:
    yield f'{scope}/self_gating/transformer_W/weights', unit.gating.transformer.kernel


def slim_variable_map(network: classification_network.VideoClassificationNetwork,
                      scope: str = SCOPE) -> Dict[str, tf.Variable]:
  """TF-slim checkpoint name -> the Keras variable holding it, for every weight of a built S3D-G `network`."""
  if not network.built:
    network.build((None, None, None, None, network.input_channels))
  mapping = {}
  for block in network.backbone.blocks:
    if isinstance(block, s3dg.Unit3D):
      mapping.update(_unit_variables(block, f'{scope}/{block.name}'))
    elif isinstance(block, s3dg.InceptionBlock):
      for branch in block.branches:
        for layer in branch.layers:
          if isinstance(layer, s3dg.Unit3D):
            mapping.update(_unit_variables(layer, f'{scope}/{block.name}/{branch.name}/{layer.name}'))
  head = network.head
  classifier = f'{scope}/{head.name}/{head.classifier.name}'
  mapping[f'{classifier}/weights'] = head.classifier.kernel
  mapping[f'{classifier}/biases'] = head.classifier.bias
  return mapping


@dataclasses.dataclass
class ImportReport:
  """What `load_slim_checkpoint` did: names are checkpoint names, `unset_model_weights` are Keras paths."""
  checkpoint: str
  loaded: List[str] = dataclasses.field(default_factory=list)
  unused_checkpoint_variables: List[str] = dataclasses.field(default_factory=list)
  unset_model_weights: List[str] = dataclasses.field(default_factory=list)
  # (checkpoint name, checkpoint shape, model shape); left unset.
  shape_mismatches: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = dataclasses.field(default_factory=list)

  @property
  def complete(self) -> bool:
    return not self.unset_model_weights

  def summary(self) -> str:
    lines = [f'{self.checkpoint}: loaded {len(self.loaded)} variables']
    lines += [f'  model weight left unset (not in the checkpoint): {p}' for p in self.unset_model_weights]
    lines += [f'  shape mismatch, left unset: {n} checkpoint {c} model {m}' for n, c, m in self.shape_mismatches]
    lines += [f'  checkpoint variable not used: {n}' for n in self.unused_checkpoint_variables]
    return '\n'.join(lines)


def _open_checkpoint(checkpoint_path: str):
  try:
    return tf.train.load_checkpoint(checkpoint_path)
  except (ValueError, tf.errors.NotFoundError, tf.errors.DataLossError) as error:
    raise ValueError(f'{checkpoint_path}: not a readable TF checkpoint (give the prefix, e.g. model.ckpt-12345, or '
                     f'its directory): {error}') from error


def load_slim_checkpoint(model: classification_network.VideoClassificationNetwork, checkpoint_path: str,
                         scope: str = SCOPE, use_moving_averages: bool = False,
                         skip_mismatched_shapes: bool = False) -> ImportReport:
  """Assigns the checkpoint's values to `model`'s weights.

  Args:
    model: the Keras S3D-G network (built or not), e.g. from `factory.build_s3dg`.
    checkpoint_path: checkpoint prefix or a directory holding one.
    scope: the TF-slim variable scope of the network ('InceptionV1' in the released checkpoints).
    use_moving_averages: take `<name>/ExponentialMovingAverage` where the checkpoint has it.
    skip_mismatched_shapes: leave weights whose shapes differ (e.g. another number of classes) at their initial
      values and report them, instead of raising.

  Returns:
    An ImportReport. Nothing is assigned if a shape mismatch raises.

  Raises:
    ValueError: unreadable checkpoint, or mismatched shapes without `skip_mismatched_shapes`.
  """
  reader = _open_checkpoint(checkpoint_path)
  shapes = reader.get_variable_to_shape_map()
  report = ImportReport(checkpoint_path)
  assignments = []
  used = set()
  for name, variable in slim_variable_map(model, scope).items():
    source = name + MOVING_AVERAGE_SUFFIX if use_moving_averages and name + MOVING_AVERAGE_SUFFIX in shapes else name
    if source not in shapes:
      report.unset_model_weights.append(variable.path)
      continue
    used.add(source)
    if tuple(shapes[source]) != tuple(variable.shape):
      report.shape_mismatches.append((source, tuple(shapes[source]), tuple(variable.shape)))
      report.unset_model_weights.append(variable.path)
      continue
    assignments.append((source, variable))
  if report.shape_mismatches and not skip_mismatched_shapes:
    raise ValueError(f'{checkpoint_path}: shapes differ from the model (are the model options right?): '
                     + '; '.join(f'{n} checkpoint {c} model {m}' for n, c, m in report.shape_mismatches))
  for source, variable in assignments:
    variable.assign(np.asarray(reader.get_tensor(source)).astype(variable.dtype))
    report.loaded.append(source)
  report.unused_checkpoint_variables = sorted(set(shapes) - used)
  return report


def _first_block_with(names, scope: str, marker: str) -> str:
  for block in s3dg.STARTAT_BLOCKS:
    if any(name.startswith(f'{scope}/{block}/') and marker in name for name in names):
      return block
  return ''


def model_options_from_checkpoint(checkpoint_path: str, scope: str = SCOPE) -> dict:
  """S3D-G network options that the checkpoint's variables determine."""
  shapes = _open_checkpoint(checkpoint_path).get_variable_to_shape_map()
  first_conv = f'{scope}/Conv2d_1a_7x7/weights'
  logits = f'{scope}/Logits/Conv2d_0c_1x1/weights'
  for required in (first_conv, logits):
    if required not in shapes:
      raise ValueError(f'{checkpoint_path}: no variable {required}: not an S3D-G checkpoint under scope {scope!r}?')
  return {'num_classes': shapes[logits][-1],
          'input_channels': shapes[first_conv][3],
          'first_temporal_kernel_size': shapes[first_conv][0],
          'temporal_conv_startat': _first_block_with(shapes, scope, '/temporal/'),
          'gating_startat': _first_block_with(shapes, scope, '/self_gating/')}


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('checkpoint', None, 'TF-slim checkpoint prefix (or its directory).')
  flags.DEFINE_string('output', None, 'Keras weights file to write, ending in .weights.h5.')
  flags.DEFINE_string('scope', SCOPE, 'Variable scope of the network in the checkpoint.')
  flags.DEFINE_integer('num_classes', None, 'Default: from the checkpoint logits.')
  flags.DEFINE_integer('input_channels', None, '3 (RGB) or 2 (flow). Default: from the checkpoint.')
  flags.DEFINE_integer('first_temporal_kernel_size', None, 'Default: from the checkpoint.')
  flags.DEFINE_string('temporal_conv_startat', None, "Default: from the checkpoint ('' = none).")
  flags.DEFINE_string('gating_startat', None, "Default: from the checkpoint ('' = no gating).")
  flags.DEFINE_float('depth_multiplier', 1.0, 'Channel multiplier the checkpoint was trained with.')
  flags.DEFINE_integer('min_depth', 16, 'Minimum channels the checkpoint was trained with.')
  flags.DEFINE_bool('use_moving_averages', False, 'Load the exponential moving averages of the weights if present.')
  flags.DEFINE_bool('skip_mismatched_shapes', False, 'Leave weights of other shapes (e.g. logits) unset.')
  flags.DEFINE_enum('pixel_range', 'zero_to_one', list(d3d_config.PIXEL_RANGES),
                    'What RGB 0..255 becomes at the network\'s input; the released D3D / S3D-G checkpoints were fed '
                    'image / 255 by their authors\' helper (zero_to_one).')
  flags.mark_flags_as_required(['checkpoint', 'output'])


def main(argv):
  del argv
  if not FLAGS.output.endswith('.weights.h5'):
    raise app.UsageError(f'--output must end in .weights.h5, got {FLAGS.output}')
  options = model_options_from_checkpoint(FLAGS.checkpoint, FLAGS.scope)
  for name in options:
    if getattr(FLAGS, name) is not None:
      options[name] = getattr(FLAGS, name)
  model_config = d3d_config.ModelConfig(
      first_temporal_kernel_size=options['first_temporal_kernel_size'],
      temporal_conv_startat=options['temporal_conv_startat'], gating_startat=options['gating_startat'],
      depth_multiplier=FLAGS.depth_multiplier, min_depth=FLAGS.min_depth, pixel_range=FLAGS.pixel_range)
  model = factory.build_s3dg(model_config, options['num_classes'], options['input_channels'])
  report = load_slim_checkpoint(model, FLAGS.checkpoint, FLAGS.scope, FLAGS.use_moving_averages,
                                FLAGS.skip_mismatched_shapes)
  print(report.summary())
  tf.io.gfile.makedirs(os.path.dirname(FLAGS.output) or '.')
  model.save_weights(FLAGS.output)
  # What it takes to rebuild the model these weights fit.
  description_path = FLAGS.output[:-len('.weights.h5')] + '.json'
  json_files.write_json(description_path, {'model': dataclasses.asdict(model_config),
                                           'num_classes': options['num_classes'],
                                           'input_channels': options['input_channels']})
  print(f'wrote {FLAGS.output} and {description_path}')
  if not report.complete:
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  app.run(main)
