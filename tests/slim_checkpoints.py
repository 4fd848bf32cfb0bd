"""TF-slim checkpoints written from a Keras S3D-G network, for the importer's tests: the layout of the released weights."""

import os
from typing import Mapping, Optional

import numpy as np
import tensorflow as tf

from official_d3d.modeling import classification_network
from official_d3d.tools import import_slim_checkpoint as importer


def write(model: classification_network.VideoClassificationNetwork, checkpoint_prefix: str, scope: str = importer.SCOPE,
          extra_variables: Optional[Mapping[str, np.ndarray]] = None) -> str:
  """Writes `model`'s weights under their TF-slim names, as a TF-slim training run (tf.compat.v1 Saver) saves them.

  `extra_variables` (name -> value) adds other entries, e.g. `global_step`. Returns the checkpoint prefix.
  """
  values = {name: variable.numpy() for name, variable in importer.slim_variable_map(model, scope).items()}
  values.update(extra_variables or {})
  directory = os.path.dirname(checkpoint_prefix) or '.'
  tf.io.gfile.makedirs(directory)
  names = sorted(values)
  tf.raw_ops.SaveV2(prefix=checkpoint_prefix, tensor_names=names, shape_and_slices=[''] * len(names),
                    tensors=[tf.convert_to_tensor(values[name]) for name in names])
  # The directory's `checkpoint` state file, so that the directory resolves to this checkpoint.
  basename = os.path.basename(checkpoint_prefix)
  with tf.io.gfile.GFile(os.path.join(directory, 'checkpoint'), 'w') as f:
    f.write(f'model_checkpoint_path: "{basename}"\nall_model_checkpoint_paths: "{basename}"\n')
  return checkpoint_prefix
