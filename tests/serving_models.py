"""Tiny networks for the export and client tests: a D3D student trained 2 steps by the real trainer on real records.

Its flow teacher is written straight in the trainer's model_dir layout (config.json, and a checkpoint holding the
network's weights as the trainer's do), which saves a second training run; the student's run restores it as any
teacher. A 2-step run still has the initial batch-norm statistics (mean 0, variance 1), with which a depth-0.1 S3D-G
answers nearly the same logits to every clip, and a preprocessing mistake would not show. So the statistics of both
networks are set to those of real clips and their classifiers scaled up, and the weights saved as the latest
checkpoint of their model_dir, where `factory.restore_network` (and so the exporter) finds them.

The runs are built once per test session, whichever test file asks first.
"""

import dataclasses
import pathlib

import keras
import numpy as np
import tensorflow as tf

import real_clips
import training_records
from official_d3d import export_saved_model
from official_d3d import train_lib
from official_d3d.configs import d3d_config
from official_d3d.modeling import factory

LOGIT_RANGE = 5.0  # largest |logit| of a calibrated network on its clips: a spread of a few units


@dataclasses.dataclass(frozen=True)
class TinyRuns:
  records: dict  # training_records.write_records' globs and label map
  flow_dir: str  # model_dir of the flow teacher
  d3d_dir: str  # model_dir of the D3D student


def save_network(network: keras.Model, model_dir: str, step: int) -> None:
  """Saves `network` as the trainer saves a run's network, as checkpoint `ckpt-<step>` of the run."""
  checkpoint = tf.train.Checkpoint(network=factory.network_checkpoint(network))
  tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=None).save(checkpoint_number=step)


def make_input_sensitive(network: keras.Model, clips: np.ndarray) -> None:
  """Sets the batch-norm statistics of `network` to those of `clips` and scales up its classifier.

  `clips` needs several clips: a tiny network's last feature map can be 1x1x1, which batch norm maps to 0 for a
  batch of one.
  """
  batch_norms = [layer for layer in network._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
  momenta = [layer.momentum for layer in batch_norms]
  for layer in batch_norms:
    layer.momentum = 0.0  # one training-mode pass then stores the batch statistics
  network(clips, training=True)
  for layer, momentum in zip(batch_norms, momenta):
    layer.momentum = momentum
  # A gain from the logits themselves, not a constant: the initial weights are random, and the logits of a badly
  # drawn network would otherwise grow past what float32 comparisons resolve.
  classifier, bias = network.head.classifier.kernel, network.head.classifier.bias
  logits = network(clips, training=False)['logits'].numpy() - bias.numpy()
  classifier.assign(classifier * (LOGIT_RANGE / np.abs(logits).max()))


def train_tiny_runs(root: pathlib.Path, video: pathlib.Path) -> TinyRuns:
  """A flow teacher (written, not trained) and a D3D student trained 2 steps by `official_d3d.train`."""
  records = training_records.write_records(root / 'records', video)
  flow_config = train_lib.resolve_config(training_records.tiny_config(records, root / 'flow', 'flow'))
  num_frames, size = flow_config.data.num_frames, flow_config.data.crop_size
  teacher = factory.build_network(flow_config, 'flow')
  d3d_config.save(flow_config, flow_config.model_dir)
  save_network(teacher, flow_config.model_dir, step=1)

  student_config = training_records.tiny_config(records, root / 'd3d', 'd3d', train_steps=2, steps_per_loop=2)
  student_config.teacher_checkpoint = flow_config.model_dir
  train_lib.run_experiment(student_config, 'train')
  # Only now: distilling the scaled-up teacher would blow up the student's 2 training steps.
  make_input_sensitive(teacher, real_clips.flow_clip(video, num_frames, size, batch=4))
  save_network(teacher, flow_config.model_dir, step=2)
  student, _ = factory.restore_network(student_config.model_dir)
  make_input_sensitive(student, real_clips.rgb_clip(video, num_frames, size, batch=4))
  save_network(student, student_config.model_dir, step=1000)
  return TinyRuns(records=records, flow_dir=flow_config.model_dir, d3d_dir=student_config.model_dir)


def export_student(runs: TinyRuns, export_dir: pathlib.Path) -> str:
  """`<export_dir>/1` of the D3D student, exported with top_k=2 (of 3 classes)."""
  return export_saved_model.export(runs.d3d_dir, str(export_dir), serving=export_saved_model.ServingConfig(top_k=2))
