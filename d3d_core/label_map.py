"""The label map file: one class name per line, line number (from 0) = `clip/label/index`.

`tfrecord_tools` writes it next to the records; training, evaluation and export read it.
"""

from typing import List, Sequence

import tensorflow as tf

FILENAME = 'label_map.txt'


class LabelMapError(ValueError):
  """A label map that cannot be used (the message names the file)."""


def write_label_map(class_names: Sequence[str], path: str) -> None:
  for name in class_names:
    if not name or '\n' in name:
      raise ValueError(f'class name {name!r} cannot be stored one per line')
  if len(set(class_names)) != len(class_names):
    raise ValueError('class names repeat in the label map')
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(''.join(name + '\n' for name in class_names))


def read_label_map(path: str) -> List[str]:
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'label map {path} not found')
  with tf.io.gfile.GFile(path) as f:
    names = [line.rstrip('\n') for line in f]
  if not names or any(not n for n in names):
    raise LabelMapError(f'label map {path} is empty or has a blank line')
  return names
