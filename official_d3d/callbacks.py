"""Keras callbacks for `train_lib.run_experiment(..., callbacks=[...])`, where a Keras epoch is one training loop of
`train.steps_per_loop` steps."""

import gc
import json
import signal
import sys
import time
from typing import Callable, ContextManager, Dict, List

from absl import logging
import keras
import tensorflow as tf
import tqdm

from d3d_core import cli
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


class PeriodicEvaluation(keras.callbacks.Callback):
  """Evaluates after every `interval_loops`-th loop on a fresh pass of `make_dataset()` and adds its metrics, as
  `val_<name>`, to that loop's logs for the callbacks listed after it (TensorBoard, history, progress).

  In place of `fit(validation_data=...)`: Keras keeps a validation pass's iterator until the next pass and releases
  it there, and on the 2-core machines this project is measured on that release stalled training for 10-60 s, at
  random, on most evaluations after the first (BUILD_NOTES.md, "Evaluation during training"). Here each pass's
  iterator is released as the pass ends.
  """

  def __init__(self, make_dataset: Callable[[], tf.data.Dataset], interval_loops: int):
    super().__init__()
    self.make_dataset = make_dataset
    self.interval_loops = interval_loops

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % self.interval_loops:
      return
    dataset = self.make_dataset()
    metrics = self.model.evaluate(dataset, verbose=0, return_dict=True)
    del dataset
    gc.collect()  # the pass's iterator, now, not at a later collection in the middle of training
    if logs is not None:
      logs.update({f'val_{name}': value for name, value in metrics.items()})


def _metrics_text(logs: Dict, prefix: str = '') -> str:
  """'loss 1.234, top-1 0.500' from Keras logs (the `val_` ones with prefix 'val_')."""
  shown = (('loss', 'loss', '.3f'), ('top_1', 'top-1', '.3f'), ('top_5', 'top-5', '.3f'))
  return ', '.join(f'{label} {float(logs[prefix + key]):{form}}' for key, label, form in shown
                   if prefix + key in logs)


class TrainingProgress(keras.callbacks.Callback):
  """What a person watches of a run: on a terminal, one progress bar over all its steps (steps, loss, top-1, steps
  per second, time left; on stderr), and on stdout a line per evaluation and a closing one, so that a log of the
  console stays short. Each loop's metrics go to absl's INFO log. Give it to the chief alone."""

  def __init__(self, name: str, train_steps: int, steps_per_loop: int, initial_step: int = 0):
    super().__init__()
    self.name = name
    self.train_steps = train_steps
    self.steps_per_loop = steps_per_loop
    self.initial_step = initial_step
    self.step = initial_step
    self._bar = None
    self._started = 0.0
    self._last_logs: Dict = {}

  def _write(self, text: str) -> None:
    tqdm.tqdm.write(f'{self.name}: {text}', file=sys.stdout)

  def on_train_begin(self, logs=None):
    self._started = time.monotonic()
    # disable=None: a bar only on a terminal; a file or pipe gets the evaluation and closing lines alone.
    self._bar = tqdm.tqdm(total=self.train_steps, initial=self.initial_step, desc=self.name, unit=' steps',
                          disable=None, leave=False, dynamic_ncols=True,
                          bar_format='{desc}: {n_fmt}/{total_fmt} |{bar:20}| {rate_fmt}, {remaining} left{postfix}')

  def on_epoch_begin(self, epoch, logs=None):
    self.step = epoch * self.steps_per_loop

  def on_train_batch_end(self, batch, logs=None):
    self.step += 1
    self._last_logs = logs or {}
    self._bar.update(1)
    self._bar.set_postfix_str(_metrics_text(self._last_logs), refresh=False)

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    step = (epoch + 1) * self.steps_per_loop
    logging.info('%s step %d/%d: %s', self.name, step, self.train_steps,
                 ', '.join(f'{key} {float(value):.4g}' for key, value in sorted(logs.items())))
    if any(key.startswith('val_') for key in logs):
      self._write(f'step {step}/{self.train_steps}, evaluation: {_metrics_text(logs, "val_")}')

  def on_train_end(self, logs=None):
    self._bar.close()
    seconds = time.monotonic() - self._started
    rate = (self.step - self.initial_step) / seconds if seconds > 0 else 0.0
    self._write(f'trained to step {self.step}/{self.train_steps} in {seconds:.0f} s ({rate:.2f} steps/s): '
                f'{_metrics_text(self._last_logs)}')


class InterruptBetweenSteps(keras.callbacks.Callback):
  """Ctrl-C during `fit` raises KeyboardInterrupt before the next step, or after the loop's checkpoint when listed
  after it, rather than wherever the signal lands: inside TensorFlow's calls (a step, a checkpoint being written) an
  interrupted process could crash at exit instead of ending as `d3d_core.cli` says. A second Ctrl-C interrupts at
  once. Active inside `with callback.installed():` (the main thread's SIGINT handler)."""

  def __init__(self):
    super().__init__()
    self.requested = False

  def _request(self, signum, frame):
    del signum, frame
    self.requested = True
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def installed(self) -> ContextManager[None]:
    return cli.sigint_handled_by(self._request)

  def _stop_if_requested(self):
    if self.requested:
      raise KeyboardInterrupt

  def on_train_batch_begin(self, batch, logs=None):
    self._stop_if_requested()

  def on_epoch_end(self, epoch, logs=None):
    self._stop_if_requested()
