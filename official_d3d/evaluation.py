"""Video-level evaluation: multi-view aggregation, top-k and per-class accuracy, two-stream fusion.

A video is scored by averaging the softmax probabilities of its `num_eval_clips x num_eval_crops` views (the usual
protocol of I3D, S3D and D3D); a two-stream prediction is a weighted average of the RGB and flow networks' video
probabilities (each stream predicted on its own). The TensorFlow part runs inside the models' `test_step` /
`predict_step`; the NumPy part turns the collected predictions into metrics.
"""

import contextlib
import warnings
from typing import Dict, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

TOP_K = (1, 5)


def multi_view_probabilities(network, clips: tf.Tensor) -> tf.Tensor:
  """Video probabilities float32 `[B, K]` of clips `[B, T, H, W, C]` or views `[B, V, T, H, W, C]`.

  Views are folded into the batch for one forward pass, and their softmax probabilities averaged per video.
  """
  if clips.shape.rank == 5:
    return tf.nn.softmax(tf.cast(network(clips, training=False)['logits'], tf.float32))
  if clips.shape.rank != 6:
    raise ValueError(f'clips must be [B, T, H, W, C] or [B, V, T, H, W, C], got shape {clips.shape}')
  shape = tf.shape(clips)
  batch_size, num_views = shape[0], shape[1]
  folded = tf.reshape(clips, tf.concat([[batch_size * num_views], shape[2:]], axis=0))
  logits = tf.cast(network(folded, training=False)['logits'], tf.float32)
  probabilities = tf.reshape(tf.nn.softmax(logits), [batch_size, num_views, -1])
  return tf.reduce_mean(probabilities, axis=1)


def _normalized_weights(num_streams: int, weights: Sequence[float]) -> np.ndarray:
  if num_streams != len(weights) or not num_streams:
    raise ValueError(f'{num_streams} streams for {len(weights)} fusion weights')
  if any(w < 0 for w in weights) or sum(weights) <= 0:
    raise ValueError(f'fusion weights must be non-negative with a positive sum, got {list(weights)}')
  return np.asarray(weights, np.float64) / float(sum(weights))


def fuse_probabilities(probabilities: Sequence, weights: Sequence[float]):
  """Weighted average of per-stream probabilities; the weights are normalised to sum to 1."""
  weights = _normalized_weights(len(probabilities), weights)
  return sum(p * w for p, w in zip(probabilities, weights))


def fuse_logits(probabilities: Sequence, weights: Sequence[float]):
  """Softmax of the weighted average of per-stream log-probabilities: of their logits, up to a constant per stream
  and video (I3D's two-stream sum). A product of experts: a stream that is sure a class is wrong vetoes it, where an
  average of probabilities lets a confident stream outvote one that spreads its mass over the classes it cannot tell
  apart (a flow network over the colours of one motion)."""
  weights = _normalized_weights(len(probabilities), weights)
  log_probabilities = sum(np.log(np.maximum(np.asarray(p, np.float64), 1e-30)) * w
                          for p, w in zip(probabilities, weights))
  fused = np.exp(log_probabilities - log_probabilities.max(axis=-1, keepdims=True))
  return (fused / fused.sum(axis=-1, keepdims=True)).astype(np.float32)


# The implementations of `d3d_config.FUSIONS`, which the config checks.
FUSIONS = {'logits': fuse_logits, 'probabilities': fuse_probabilities}


def two_stream_probabilities(rgb: Mapping[str, np.ndarray], flow: Mapping[str, np.ndarray],
                             flow_weight: float = 0.5, fusion: str = 'logits') -> np.ndarray:
  """Late fusion (`FUSIONS[fusion]`), weights 1 - flow_weight for RGB and flow_weight for flow, of two streams'
  `predict_videos` outputs.

  The two passes must have scored the same videos in the same order: their labels are compared.
  """
  if not 0.0 <= flow_weight <= 1.0:
    raise ValueError(f'flow_weight must be in [0, 1], got {flow_weight}')
  if not np.array_equal(rgb['labels'], flow['labels']):
    raise ValueError(f'the RGB and flow passes scored different videos ({len(rgb["labels"])} and '
                     f'{len(flow["labels"])} labels, not in the same order): fusion needs the same evaluation set')
  return FUSIONS[fusion]([rgb['probabilities'], flow['probabilities']], [1.0 - flow_weight, flow_weight])


def top_k_credit(scores, labels, k: int) -> tf.Tensor:
  """float32 `[N]` in [0, 1]: the chance that the label is among the k best-scored classes, ties broken at random.

  A label tied with other classes across the k-th place gets the fraction of tie-breaks that keep it in the top k,
  so a constant (uniform) predictor scores chance, k / num_classes, not 100 %. A row with any non-finite score (a
  diverged network) scores 0. `scores` `[N, K]` are probabilities or logits; works on tensors and NumPy arrays.
  """
  scores = tf.convert_to_tensor(scores)
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  label_score = tf.gather(scores, labels, axis=1, batch_dims=1)[:, tf.newaxis]
  num_better = tf.reduce_sum(tf.cast(scores > label_score, tf.float32), axis=1)
  num_tied = tf.reduce_sum(tf.cast(scores == label_score, tf.float32), axis=1)  # the label itself included
  credit = tf.clip_by_value((float(k) - num_better) / num_tied, 0.0, 1.0)
  finite = tf.reduce_all(tf.math.is_finite(scores), axis=1)
  return tf.where(finite, credit, tf.zeros_like(credit))


class TopKAccuracy(keras.metrics.Mean):
  """Mean `top_k_credit` of integer labels `[B]` against scores `[B, K]`: Keras' top-k count without its ties bonus.

  (`keras.metrics.SparseTopKCategoricalAccuracy` counts a tie across the k-th place as a hit, so a diverged or
  constant network reads 100 %.)
  """

  def __init__(self, k: int, name: Optional[str] = None, **kwargs):
    super().__init__(name=name or f'top_{k}', **kwargs)
    self.k = k

  def update_state(self, labels, scores, sample_weight=None):
    return super().update_state(top_k_credit(scores, labels, self.k), sample_weight=sample_weight)

  def get_config(self):
    return {**super().get_config(), 'k': self.k}


def classification_metrics(probabilities, labels, class_names: Optional[Sequence[str]] = None) -> Dict:
  """Video-level top-1 / top-5, mean per-class accuracy, each class's top-1 accuracy and the confusion matrix, from
  `[N, K]` and `[N]`.

  `confusion[i][j]` counts the videos of class i whose top-1 prediction is class j (ties to the lowest index): which
  classes a network mixes up, e.g. those that only motion tells apart.
  """
  probabilities = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels, np.int64).reshape(-1)
  if probabilities.ndim != 2 or len(probabilities) != len(labels):
    raise ValueError(f'probabilities {probabilities.shape} and labels {labels.shape} do not match')
  num_classes = probabilities.shape[1]
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}')
  names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f'{len(names)} class names for {num_classes} classes')

  metrics = {'num_videos': int(len(labels))}
  for k in TOP_K:
    metrics[f'top_{k}'] = float(np.mean(top_k_credit(probabilities, labels, k))) if len(labels) else 0.0
  correct = top_k_credit(probabilities, labels, 1).numpy() if len(labels) else np.zeros([0])
  per_class = {names[c]: float(np.mean(correct[labels == c])) for c in range(num_classes) if np.any(labels == c)}
  metrics['mean_class_accuracy'] = float(np.mean(list(per_class.values()))) if per_class else 0.0
  metrics['per_class_accuracy'] = per_class
  confusion = np.zeros([num_classes, num_classes], np.int64)
  if len(labels):
    np.add.at(confusion, (labels, np.argmax(np.nan_to_num(probabilities, nan=-np.inf), axis=1)), 1)
  metrics['confusion'] = confusion.tolist()
  return metrics


def predict_videos(model, dataset) -> Dict[str, np.ndarray]:
  """The model's `predict_step` outputs over one pass of a dataset, e.g. 'probabilities' `[N, K]` and 'labels' `[N]`.

  Runs under the model's distribution strategy; `dataset` may be distributed.
  """
  with end_of_records_expected():
    return model.predict(dataset, verbose=0)


@contextlib.contextmanager
def end_of_records_expected():
  """Keras cannot know how many batches TFRecords hold, and warns when they end: for an evaluation pass that end is
  the intended one (training input never ends)."""
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='Your input ran out of data')
    yield
