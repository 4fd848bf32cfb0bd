"""Training and evaluation of one stream (flow teacher, RGB baseline or D3D student) in a model_dir: the library
that `official_d3d.train` drives from flags and that scripts (the demo, benchmarks) call directly.

`run_experiment` trains and/or evaluates; it resumes from the model_dir's latest checkpoint after checking that the
settings still match, writes `config.json` with the first checkpoint (a run that fails to start leaves the folder
free for the corrected command), and holds the model_dir so that a second training there is refused while the first
is alive. It raises one of `USER_ERRORS`, whose message is all a user needs, when it cannot go on: settings that
cannot work, records it cannot use (named by file and video), a loss that is no longer finite (named by step; no
checkpoint is saved after it). Evaluation writes `<model_dir>/eval_metrics.json`, and with `fusion_model_dir`
`two_stream_metrics.json`; TensorBoard summaries go to `<model_dir>/logs`, and each loop's metrics to
`<model_dir>/history.jsonl` (`callbacks.read_history` reads them back, across resumed runs).
"""

import contextlib
import dataclasses
import math
import os
from typing import Dict, Optional, Sequence

from absl import logging
import keras
import tensorflow as tf

from d3d_core import cli
from d3d_core import folder_lock
from d3d_core import json_files
from d3d_core import label_map
from official_d3d import callbacks as callbacks_lib
from official_d3d import evaluation
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from official_d3d.modeling import d3d_model
from official_d3d.modeling import factory
from official_d3d.modeling import optimization

MODES = ('train', 'eval', 'train_and_eval')
EVAL_METRICS_FILENAME = 'eval_metrics.json'
TWO_STREAM_METRICS_FILENAME = 'two_stream_metrics.json'
LOGS_DIRNAME = 'logs'
# Settings that define the trained network: an evaluation must agree with its model_dir on these.
NETWORK_SETTINGS = ('stream', 'data.num_classes', 'model.')


def _tpu_strategy(train_config: d3d_config.TrainConfig) -> tf.distribute.Strategy:
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=train_config.tpu_address)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
  """TensorFlow's, with a `reduce` that takes what Keras 3 asks of it across workers, without which `fit` fails before
  its first step (keras-team/keras#20329): a nested structure (a whole batch, reduced once to build the model) and
  per-replica scalars along axis 0 (each step's metrics), averaged over the replicas as Keras does on one worker.
  Collectives take no uint8 (the input pipeline's clips): that batch is only reduced for its shapes, so such leaves
  are this replica's own."""

  COLLECTIVE_DTYPES = (tf.bfloat16, tf.float16, tf.float32, tf.float64, tf.int32, tf.int64)

  def reduce(self, reduce_op, value, axis):
    reduce_one = super().reduce
    def reduce_leaf(leaf):
      local = self.experimental_local_results(leaf)[0]
      if local.dtype not in self.COLLECTIVE_DTYPES:
        return local
      return reduce_one(reduce_op, leaf, None if local.shape.rank == 0 else axis)
    return tf.nest.map_structure(reduce_leaf, value)


# The implementations of `d3d_config.STRATEGIES`, which the config checks; 'one_device' is TensorFlow's default
# strategy (first GPU, else CPU).
STRATEGIES = {
    'one_device': lambda train_config: tf.distribute.get_strategy(),
    'mirrored': lambda train_config: tf.distribute.MirroredStrategy(),
    'multi_worker_mirrored': lambda train_config: _MultiWorkerMirroredStrategy(),
    'tpu': _tpu_strategy,
}


def build_strategy(train_config: d3d_config.TrainConfig) -> tf.distribute.Strategy:
  """The tf.distribute strategy the config names."""
  return STRATEGIES[train_config.distribution_strategy](train_config)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's files; under multi-worker training, one worker does."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type or resolver.task_type == 'chief':
    return True
  has_chief = 'chief' in resolver.cluster_spec().as_dict()
  return resolver.task_type == 'worker' and resolver.task_id == 0 and not has_chief


def worker_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process saves checkpoints and summaries: model_dir, or a scratch folder for a non-chief worker.

  Every worker of a multi-worker run must save (saving is collective), but only the chief's copy is kept.
  """
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, 'workers', f'{resolver.task_type}_{resolver.task_id}')


def remove_unfinished_saves(folder: str) -> None:
  """Deletes the `<prefix>_temp` folders that a non-chief worker killed while saving left in its scratch folder."""
  for path in tf.io.gfile.glob(os.path.join(folder, '*_temp')):
    tf.io.gfile.rmtree(path)


@contextlib.contextmanager
def precision_policy(name: str):
  """Keras' global dtype policy for the layers built inside; the previous one is restored after."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


def _pixel_range(config: d3d_config.ExperimentConfig) -> str:
  """`model.pixel_range`, or when empty: the saved run's, else the init_checkpoint network's, else [-1, 1]."""
  if config.model.pixel_range:
    return config.model.pixel_range
  if tf.io.gfile.exists(os.path.join(config.model_dir, d3d_config.CONFIG_FILENAME)):
    return d3d_config.load(config.model_dir).model.pixel_range
  if config.init_checkpoint:
    return factory.network_config(config.init_checkpoint).model.pixel_range
  return d3d_config.DEFAULT_PIXEL_RANGE


def resolve_config(config: d3d_config.ExperimentConfig) -> d3d_config.ExperimentConfig:
  """A validated copy with the class count filled in from the label map, and the pixel range from the network."""
  config = d3d_config.from_dict(d3d_config.to_dict(config)).validate()
  config.data.num_classes = factory.resolve_num_classes(config.data)
  config.model.pixel_range = _pixel_range(config)
  return config


def check_data(config: d3d_config.ExperimentConfig, mode: str) -> None:
  """Raises, before anything is written, when a pattern matches nothing or its records lack a modality the run
  reads."""
  if mode != 'eval':
    video_input.check_first_record(config.data.train_pattern, 'train_pattern', factory.train_modalities(config.stream))
  if mode != 'train' or config.train.eval_interval:
    video_input.check_first_record(config.data.eval_pattern, 'eval_pattern',
                                   (factory.stream_modality(config.stream),))


def make_model_dir(model_dir: str) -> None:
  """Creates model_dir; raises ConfigError when it is a file or cannot be made."""
  if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
    raise d3d_config.ConfigError(f'model_dir {model_dir} is a file, not a folder')
  try:
    tf.io.gfile.makedirs(model_dir)
  except tf.errors.OpError as error:
    raise d3d_config.ConfigError(f'model_dir {model_dir} cannot be made ({cli.error_reason(error)})') from None


class TrainingDivergedError(RuntimeError):
  """The loss or the weights stopped being finite: training cannot recover, and nothing after it is saved."""


class WorkerLostError(RuntimeError):
  """A worker of a multi-worker run stopped answering: the collective ops of every step need all of them."""


# What stops a run with one `error:` line: settings, data or a run that are the user's to fix.
USER_ERRORS = (d3d_config.ConfigError, label_map.LabelMapError, video_input.RecordError, folder_lock.FolderLockedError,
               TrainingDivergedError, WorkerLostError)


@contextlib.contextmanager
def named_worker_loss(config: d3d_config.ExperimentConfig):
  """Turns the UNAVAILABLE error of a collective op whose peer is gone into a WorkerLostError saying how to resume
  (TensorFlow's own says 'Graph execution error')."""
  try:
    yield
  except tf.errors.UnavailableError:
    if config.train.distribution_strategy != 'multi_worker_mirrored':
      raise
    latest = tf.train.latest_checkpoint(config.model_dir)
    raise WorkerLostError(
        'a worker of this multi-worker run stopped answering (a collective op found its peer UNAVAILABLE): start '
        f'every worker again with the same command; they resume from {latest or "the start (no checkpoint yet)"}'
    ) from None


@contextlib.contextmanager
def named_data_errors(config: d3d_config.ExperimentConfig):
  """Turns TensorFlow's errors about bad records into a RecordError naming the file (and video)."""
  try:
    yield
  except tf.errors.InvalidArgumentError as error:
    record_error = video_input.record_error(error)
    if record_error is None:
      raise
    raise record_error from None
  except tf.errors.DataLossError as error:
    found = video_input.find_corrupt_record((config.data.train_pattern, config.data.eval_pattern))
    raise video_input.RecordError(found or f'a record could not be read: {error.message}') from None


def check_saved_config(config: d3d_config.ExperimentConfig, allowed: Optional[Sequence[str]] = None,
                       checked: Optional[Sequence[str]] = None) -> None:
  """Raises if `<model_dir>/config.json` exists and disagrees with `config` outside the `allowed` settings (by
  default those a resumed run may change, `d3d_config.resumable_settings()`)."""
  allowed = d3d_config.resumable_settings() if allowed is None else allowed
  path = os.path.join(config.model_dir, d3d_config.CONFIG_FILENAME)
  if not tf.io.gfile.exists(path):
    return
  changed = [name for name in d3d_config.differences(config, d3d_config.load(config.model_dir))
             if name not in allowed and (checked is None or name.startswith(tuple(checked)))]
  if changed:
    raise d3d_config.ConfigError(
        f'{path} was written by a run with other settings ({", ".join(changed)}): use a new '
        'model_dir, or the same settings to resume')


class StopOnDivergence(keras.callbacks.Callback):
  """Stops training, naming the step, at the first loss that is not finite, or at the end of a loop whose weights
  are not all finite (a loss can stay finite on the step that breaks them). Listed before the checkpoint callback,
  it stops a loop's end before its checkpoint is saved."""

  def __init__(self, steps_per_loop: int, learning_rate: float):
    super().__init__()
    self.steps_per_loop = steps_per_loop
    self.learning_rate = learning_rate
    self.loop = 0

  def _diverged(self, step: int, problem: str) -> TrainingDivergedError:
    return TrainingDivergedError(
        f'training diverged at step {step}: {problem}; no checkpoint after step {self.loop * self.steps_per_loop} '
        f'was saved. Train in a new model_dir with a lower train.learning_rate (now {self.learning_rate:g}) or more '
        'train.warmup_steps')

  def on_epoch_begin(self, epoch, logs=None):
    self.loop = epoch

  def on_train_batch_end(self, batch, logs=None):
    loss = float(logs['loss'])
    if not math.isfinite(loss):
      raise self._diverged(self.loop * self.steps_per_loop + batch + 1, f'the loss is {loss}')

  def on_epoch_end(self, epoch, logs=None):
    if not all(bool(tf.reduce_all(tf.math.is_finite(weight))) for weight in self.model.weights):
      raise self._diverged((epoch + 1) * self.steps_per_loop, 'some weights are no longer finite')


class CheckpointEveryLoop(keras.callbacks.Callback):
  """Saves model, optimizer and step count after each loop of `steps_per_loop` steps (one Keras epoch);
  `before_first_save` runs once, before the first checkpoint (it writes the run's config)."""

  def __init__(self, manager: tf.train.CheckpointManager, step: tf.Variable, steps_per_loop: int,
               before_first_save=lambda: None):
    super().__init__()
    self.manager = manager
    self.step = step
    self.steps_per_loop = steps_per_loop
    self.before_first_save = before_first_save

  def on_epoch_end(self, epoch, logs=None):
    if self.manager.latest_checkpoint is None:
      self.before_first_save()
    self.step.assign((epoch + 1) * self.steps_per_loop)
    path = self.manager.save(checkpoint_number=int(self.step.numpy()))
    logging.info('Step %d: saved %s', int(self.step.numpy()), path)


def _eval_dataset(strategy, config, modalities):
  def dataset_fn(input_context):
    dataset = video_input.build_eval_dataset(config.data, modalities, input_context, config.model.pixel_range)
    return dataset.take(config.train.eval_steps) if config.train.eval_steps else dataset
  return strategy.distribute_datasets_from_function(dataset_fn)


def _class_names(data_config):
  return label_map.read_label_map(data_config.label_map) if data_config.label_map else None


def _write_eval_summaries(model_dir: str, metrics: Dict, step: int) -> None:
  writer = tf.summary.create_file_writer(os.path.join(model_dir, LOGS_DIRNAME, 'eval'))
  with writer.as_default():
    for name in ('top_1', 'top_5', 'mean_class_accuracy'):
      tf.summary.scalar(name, metrics[name], step=step)
  writer.close()


def evaluate_model(model: d3d_model.VideoClassifier, config: d3d_config.ExperimentConfig, strategy,
                   step: int) -> Dict:
  """Video-level metrics of a model on the evaluation set, written to `<model_dir>/eval_metrics.json`."""
  dataset = _eval_dataset(strategy, config, (factory.stream_modality(config.stream),))
  outputs = evaluation.predict_videos(model, dataset)
  metrics = evaluation.classification_metrics(outputs['probabilities'], outputs['labels'], _class_names(config.data))
  metrics.update(step=step, stream=config.stream,
                 num_views=config.data.num_eval_clips * config.data.num_eval_crops)
  if is_chief(strategy):
    json_files.write_json(os.path.join(config.model_dir, EVAL_METRICS_FILENAME), metrics)
    _write_eval_summaries(config.model_dir, metrics, step)
  logging.info('Step %d: top-1 %.4f, top-5 %.4f over %d videos', step, metrics['top_1'], metrics['top_5'],
               metrics['num_videos'])
  return metrics


def evaluate_two_stream(rgb_model_dir: str, flow_model_dir: str,
                        data_config: Optional[d3d_config.DataConfig] = None, flow_weight: float = 0.5,
                        fusion: str = 'logits', eval_steps: int = 0, output_path: Optional[str] = None,
                        strategy: Optional[tf.distribute.Strategy] = None) -> Dict:
  """Late fusion of an RGB (or D3D) network and a flow network: {'rgb', 'flow', 'two_stream'} video metrics.

  Each stream predicts the evaluation set (`data_config`, by default the RGB run's) reading its own modality; each
  video's probabilities are averaged over its views, then fused (`evaluation.FUSIONS[fusion]`) with weights
  1 - flow_weight for RGB and flow_weight for flow.
  """
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    rgb_network, rgb_config = factory.restore_network(rgb_model_dir)
    flow_network, flow_config = factory.restore_network(flow_model_dir)
  if flow_config.stream != 'flow' or rgb_config.stream == 'flow':
    raise d3d_config.ConfigError(
        f'two-stream fusion needs an RGB model_dir and a flow one, got {rgb_model_dir} '
        f'({rgb_config.stream}) and {flow_model_dir} ({flow_config.stream})')
  if rgb_config.data.num_classes != flow_config.data.num_classes:
    raise d3d_config.ConfigError(
        f'{rgb_model_dir} has {rgb_config.data.num_classes} classes, {flow_model_dir} '
        f'{flow_config.data.num_classes}')
  data_config = data_config or rgb_config.data
  config = dataclasses.replace(rgb_config, data=data_config,
                               train=dataclasses.replace(rgb_config.train, eval_steps=eval_steps))
  streams = {}
  for modality, network in (('rgb', rgb_network), ('flow', flow_network)):
    with strategy.scope():
      model = d3d_model.VideoClassifier(network, modality)
      model.compile()
    streams[modality] = evaluation.predict_videos(model, _eval_dataset(strategy, config, (modality,)))
  class_names = _class_names(data_config)
  metrics = {modality: evaluation.classification_metrics(outputs['probabilities'], outputs['labels'], class_names)
             for modality, outputs in streams.items()}
  metrics['two_stream'] = evaluation.classification_metrics(
      evaluation.two_stream_probabilities(streams['rgb'], streams['flow'], flow_weight, fusion),
      streams['rgb']['labels'], class_names)
  metrics.update(rgb_model_dir=rgb_model_dir, flow_model_dir=flow_model_dir, flow_weight=flow_weight, fusion=fusion)
  if output_path and is_chief(strategy):
    json_files.write_json(output_path, metrics)
  return metrics


def _train(model, config, strategy, step, manager, callbacks) -> Dict:
  """Keras fit from the step reached to `train_steps`, one epoch per loop of `steps_per_loop` steps; the chief
  writes the run's config with the first checkpoint."""
  steps_per_loop = config.train.steps_per_loop
  initial_loop = int(step.numpy()) // steps_per_loop
  num_loops = config.train.train_steps // steps_per_loop
  if initial_loop >= num_loops:
    logging.info('Training already reached step %d of %d', int(step.numpy()), config.train.train_steps)
    return {}
  train_dataset = strategy.distribute_datasets_from_function(
      lambda context: video_input.build_train_dataset(config.data, factory.train_modalities(config.stream), context,
                                                      config.model.pixel_range))
  def write_config():
    if is_chief(strategy):
      d3d_config.save(config, config.model_dir)

  callbacks = [StopOnDivergence(steps_per_loop, config.train.learning_rate),
               CheckpointEveryLoop(manager, step, steps_per_loop, write_config),
               *([callbacks_lib.PeriodicEvaluation(
                   lambda: _eval_dataset(strategy, config, (factory.stream_modality(config.stream),)),
                   config.train.eval_interval // steps_per_loop)] if config.train.eval_interval else []),
               keras.callbacks.TensorBoard(os.path.join(worker_dir(config.model_dir, strategy), LOGS_DIRNAME)),
               *([callbacks_lib.HistoryLogger(os.path.join(config.model_dir, callbacks_lib.HISTORY_FILENAME),
                                              steps_per_loop),
                  callbacks_lib.TrainingProgress(os.path.basename(os.path.normpath(config.model_dir)),
                                                 num_loops * steps_per_loop, steps_per_loop,
                                                 initial_loop * steps_per_loop)] if is_chief(strategy) else []),
               *callbacks]
  interrupt = callbacks_lib.InterruptBetweenSteps()  # listed last: it stops after the loop's checkpoint
  with evaluation.end_of_records_expected(), interrupt.installed():  # end of records: of the validation passes
    history = model.fit(train_dataset, epochs=num_loops, initial_epoch=initial_loop, steps_per_epoch=steps_per_loop,
                        callbacks=[*callbacks, interrupt], shuffle=False, verbose=0)
  return history.history


def run_experiment(config: d3d_config.ExperimentConfig, mode: str = 'train_and_eval',
                   callbacks: Sequence[keras.callbacks.Callback] = ()) -> Dict:
  """Trains and/or evaluates one stream in `config.model_dir`; resumes from its latest checkpoint.

  Returns {'history': per-loop training logs (from this invocation), 'step': the step reached, 'eval': video-level
  metrics, 'two_stream': fusion metrics when `fusion_model_dir` is set}.
  """
  if mode not in MODES:
    raise d3d_config.ConfigError(f'mode must be one of {MODES}, got {mode!r}')
  if not config.model_dir:
    raise d3d_config.ConfigError('model_dir is required: checkpoints, config.json and metrics are written there')
  config = resolve_config(config)
  training = mode != 'eval'
  strategy = build_strategy(config.train)
  if training:
    check_saved_config(config)
  else:
    check_saved_config(config, allowed=(), checked=NETWORK_SETTINGS)
  check_data(config, mode)
  holds_model_dir = training and is_chief(strategy)
  if holds_model_dir:
    make_model_dir(config.model_dir)
  with folder_lock.hold(config.model_dir, 'training') if holds_model_dir else contextlib.nullcontext():
    with named_data_errors(config), named_worker_loss(config):
      return _run(config, mode, strategy, callbacks)


def _run(config: d3d_config.ExperimentConfig, mode: str, strategy: tf.distribute.Strategy,
         callbacks: Sequence[keras.callbacks.Callback]) -> Dict:
  """`run_experiment` once its settings and data are checked."""
  training = mode != 'eval'
  results = {}
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')  # Host-side bookkeeping, not distributed.
  with precision_policy(config.train.mixed_precision):
    with strategy.scope():
      if training:
        model = factory.build_model(config)
        model.compile(optimizer=optimization.build_optimizer(config.train), jit_compile=config.train.jit_compile)
        # Optimizer slots exist before a restore, so that the checkpoint fills them instead of deferring.
        model.optimizer.build(model.trainable_variables)
      else:  # The trained network alone: a D3D student evaluates without its teacher.
        network, _ = factory.restore_network(config.model_dir)
        model = d3d_model.VideoClassifier(network, factory.stream_modality(config.stream))
        model.compile(jit_compile=config.train.jit_compile)

    if training:
      checkpoint = factory.training_checkpoint(model, step)
      if not is_chief(strategy):
        remove_unfinished_saves(worker_dir(config.model_dir, strategy))
      manager = tf.train.CheckpointManager(checkpoint, worker_dir(config.model_dir, strategy),
                                           max_to_keep=config.train.max_checkpoints)
      latest = tf.train.latest_checkpoint(config.model_dir)  # The chief's, for every worker.
      if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info('Resumed from %s at step %d', latest, int(step.numpy()))
      results['history'] = _train(model, config, strategy, step, manager, callbacks)
    else:
      prefix, _ = factory.find_checkpoint(config.model_dir)
      tf.train.Checkpoint(step=step).restore(prefix).expect_partial()
    results['step'] = int(step.numpy())
    if mode != 'train':
      results['eval'] = evaluate_model(model, config, strategy, results['step'])
      if config.fusion_model_dir:
        results['two_stream'] = evaluate_two_stream(
            config.model_dir, config.fusion_model_dir, config.data, config.fusion_flow_weight, config.fusion,
            config.train.eval_steps, os.path.join(config.model_dir, TWO_STREAM_METRICS_FILENAME), strategy)
  return results
