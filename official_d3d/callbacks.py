"""Keras callbacks for `train_lib.run_experiment(..., callbacks=[...])`, where a Keras epoch is one training loop of
`train.steps_per_loop` steps."""

import json
from typing import List

import keras
import tensorflow as tf

from d3d_core import json_files

HISTORY_FILENAME = 'history.jsonl'  # the name to give it in a model_dir


def read_history(path: str) -> List[dict]:
  """The logged loops in step order, the last entry per step winning (a resumed run repeats the loop it was killed
  in); none for a run that logged nothing yet."""
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    entries = {entry['step']: entry for entry in map(json.loads, filter(str.strip, f))}
  return [entries[step] for step in sorted(entries)]


class HistoryLogger(keras.callbacks.Callback):
  """Keeps each loop's logs (training metrics, and `val_` ones after an evaluation) with its step in a JSON-lines
  file, so that a run's curves survive an interrupted and resumed run; TensorBoard's event files are not meant to be
  read back.

  The whole file is rewritten atomically after each loop: `gs://` has no appending, and a kill leaves the previous
  version. Under a multi-worker strategy, give it to the chief alone.
  """

  def __init__(self, path: str, steps_per_loop: int):
    super().__init__()
    self.path = path
    self.steps_per_loop = steps_per_loop
    self._entries: List[dict] = []

  def on_train_begin(self, logs=None):
    self._entries = read_history(self.path)

  def on_epoch_end(self, epoch, logs=None):
    step = (epoch + 1) * self.steps_per_loop
    entry = {'step': step, **{name: float(value) for name, value in (logs or {}).items()}}
    self._entries = [*(kept for kept in self._entries if kept['step'] < step), entry]
    with json_files.written_atomically(self.path) as temporary, tf.io.gfile.GFile(temporary, 'w') as f:
      f.write(''.join(json.dumps(kept) + '\n' for kept in self._entries))
