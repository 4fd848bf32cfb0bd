"""Video-level evaluation: view aggregation, top-k and per-class accuracy, two-stream fusion, JSON report."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import real_clips
from official_d3d import evaluation
from official_d3d.modeling import d3d_model

NUM_CLASSES = 6


def small_network(channels, seed):
  """A random Conv3D classifier with S3D-G's outputs: distinct, non-uniform probabilities for each clip."""
  keras.utils.set_random_seed(seed)
  clips = keras.Input((None, None, None, channels))
  features = keras.layers.GlobalAveragePooling3D()(keras.layers.Conv3D(8, 3, strides=2, activation='relu')(clips))
  logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0))(features)
  return keras.Model(clips, {'logits': logits, 'features': features})


@pytest.fixture(scope='module')
def views(bikes_video):
  """Two videos x 3 views (clips shifted in time, then mirrored) of real RGB and flow: [2, 3, 4, 32, 32, C]."""
  rgb = real_clips.rgb_clip(bikes_video, 4, 32, batch=3)
  flow = real_clips.flow_clip(bikes_video, 6, 32)
  flow = np.concatenate([flow[:, i:i + 4] for i in range(3)])
  return {'rgb': np.stack([rgb, rgb[:, :, :, ::-1]]), 'flow': np.stack([flow, flow[:, :, :, ::-1]])}


def per_view_average(network, views):
  """Reference: each view through the network on its own, softmax, then the mean over a video's views."""
  return np.stack([np.mean([tf.nn.softmax(network(view[None], training=False)['logits'])[0] for view in video], axis=0)
                   for video in views])


def test_views_are_folded_into_the_batch_and_their_probabilities_averaged(views):
  network = small_network(3, seed=0)
  probabilities = evaluation.multi_view_probabilities(network, tf.constant(views['rgb'])).numpy()
  expected = per_view_average(network, views['rgb'])
  np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
  assert not np.allclose(expected, 1 / NUM_CLASSES, atol=1e-3)  # a real test: probabilities far from uniform
  single_view = evaluation.multi_view_probabilities(network, tf.constant(views['rgb'][:, 0])).numpy()
  np.testing.assert_allclose(single_view, per_view_average(network, views['rgb'][:, :1]), rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match='B, V, T, H, W, C'):
    evaluation.multi_view_probabilities(network, tf.zeros([2, 4, 32, 32]))


def test_late_fusion_averages_the_streams_video_logits_or_probabilities(views):
  rgb_network, flow_network = small_network(3, seed=1), small_network(2, seed=2)
  labels = np.array([3, 5], np.int32)
  dataset = tf.data.Dataset.from_tensors((views, labels))
  streams = {modality: evaluation.predict_videos(d3d_model.VideoClassifier(network, modality), dataset)
             for modality, network in (('rgb', rgb_network), ('flow', flow_network))}
  rgb = per_view_average(rgb_network, views['rgb'])
  flow = per_view_average(flow_network, views['flow'])
  np.testing.assert_allclose(streams['rgb']['probabilities'], rgb, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(streams['flow']['probabilities'], flow, rtol=1e-5, atol=1e-7)
  fused = evaluation.two_stream_probabilities(streams['rgb'], streams['flow'], flow_weight=0.25)
  # The default: the softmax of the weighted mean of each stream's video log-probabilities (of its logits with one
  # view).
  np.testing.assert_allclose(fused, tf.nn.softmax(0.75 * np.log(rgb) + 0.25 * np.log(flow)).numpy(), rtol=1e-4,
                             atol=1e-7)
  assert not np.allclose(fused, 0.75 * rgb + 0.25 * flow, rtol=1e-3)
  averaged = evaluation.two_stream_probabilities(streams['rgb'], streams['flow'], flow_weight=0.25,
                                                 fusion='probabilities')
  np.testing.assert_allclose(averaged, 0.75 * rgb + 0.25 * flow, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(streams['flow']['labels'], labels)
  with pytest.raises(ValueError, match='flow_weight'):
    evaluation.two_stream_probabilities(streams['rgb'], streams['flow'], flow_weight=1.5)
  with pytest.raises(ValueError, match='different videos'):
    evaluation.two_stream_probabilities(streams['rgb'], {**streams['flow'], 'labels': labels[::-1]})


def test_logit_fusion_lets_a_stream_veto_the_classes_it_rules_out():
  """Flow knows the motion (classes 0 and 1 share it) but not the colour; RGB knows the colour but leans to the wrong
  motion. Averaged probabilities follow RGB's confident mistake; averaged logits combine what each stream knows."""
  flow = np.array([[0.49, 0.49, 0.01, 0.01]])  # motion A, colour unknown
  rgb = np.array([[0.15, 0.01, 0.83, 0.01]])  # colour of classes 0 and 2, leaning to motion B
  assert np.argmax(evaluation.fuse_probabilities([rgb, flow], [1.0, 1.0])) == 2
  fused = evaluation.fuse_logits([rgb, flow], [1.0, 1.0])
  assert np.argmax(fused) == 0
  np.testing.assert_allclose(fused.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(fused, np.sqrt(rgb * flow) / np.sqrt(rgb * flow).sum(), rtol=1e-5)
  # A stream with all the weight is that stream.
  np.testing.assert_allclose(evaluation.fuse_logits([rgb, flow], [0.0, 1.0]), flow, rtol=1e-5)


def test_fuse_probabilities_normalises_the_weights():
  a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
  np.testing.assert_allclose(evaluation.fuse_probabilities([a, b], [3.0, 1.0]), [[0.75, 0.25]])
  with pytest.raises(ValueError, match='non-negative'):
    evaluation.fuse_probabilities([a, b], [1.0, -1.0])
  with pytest.raises(ValueError, match='2 streams for 1'):
    evaluation.fuse_probabilities([a, b], [1.0])


def test_classification_metrics_top_k_and_per_class():
  # Rank of the label: 1st, 2nd, 6th (last), 1st.
  probabilities = np.array([[0.50, 0.10, 0.10, 0.10, 0.10, 0.10],
                            [0.40, 0.30, 0.10, 0.10, 0.05, 0.05],
                            [0.30, 0.25, 0.20, 0.15, 0.08, 0.02],
                            [0.05, 0.05, 0.05, 0.05, 0.05, 0.75]])
  labels = np.array([0, 1, 5, 5])
  names = ['a', 'b', 'c', 'd', 'e', 'f']
  metrics = evaluation.classification_metrics(probabilities, labels, names)
  assert metrics['num_videos'] == 4
  assert metrics['top_1'] == 0.5 and metrics['top_5'] == 0.75
  assert metrics['per_class_accuracy'] == {'a': 1.0, 'b': 0.0, 'f': 0.5}  # classes with videos only
  assert metrics['mean_class_accuracy'] == pytest.approx(0.5)
  confusion = np.zeros([6, 6], int)
  confusion[0, 0] = confusion[1, 0] = confusion[5, 0] = confusion[5, 5] = 1  # (label, top-1 prediction)
  assert metrics['confusion'] == confusion.tolist()


def test_ties_never_favour_the_label_and_a_diverged_network_scores_zero():
  uniform = np.full((2, 6), 1 / 6)
  metrics = evaluation.classification_metrics(uniform, [2, 4])
  assert metrics['top_1'] == pytest.approx(1 / 6) and metrics['top_5'] == pytest.approx(5 / 6)  # chance
  # The label tied with one other class for first place: half of the tie-breaks put it first.
  tied = np.array([[0.4, 0.4, 0.1, 0.1, 0.0, 0.0]])
  assert evaluation.classification_metrics(tied, [1])['top_1'] == pytest.approx(0.5)
  nan = np.full((2, 6), np.nan)
  one_nan = np.array([[0.9, np.nan, 0.1, 0.0, 0.0, 0.0]])
  for probabilities, labels in ((nan, [2, 4]), (one_nan, [0])):
    metrics = evaluation.classification_metrics(probabilities, labels)
    assert metrics['top_1'] == 0.0 and metrics['top_5'] == 0.0 and metrics['mean_class_accuracy'] == 0.0


def test_the_training_metric_uses_the_same_tie_rule():
  metric = evaluation.TopKAccuracy(k=1)
  metric.update_state(tf.constant([0, 3]), tf.zeros([2, 4]))  # constant logits: chance
  assert float(metric.result()) == pytest.approx(0.25)
  metric.update_state(tf.constant([1]), tf.constant([[np.nan] * 4]))
  assert float(metric.result()) == pytest.approx(0.5 / 3)
  assert evaluation.TopKAccuracy.from_config(metric.get_config()).k == 1


def test_bad_evaluation_inputs_are_named():
  uniform = np.full((2, 6), 1 / 6)
  with pytest.raises(ValueError, match=r'labels must be in \[0, 6\)'):
    evaluation.classification_metrics(uniform, [0, 6])
  with pytest.raises(ValueError, match='do not match'):
    evaluation.classification_metrics(uniform, [0])
  with pytest.raises(ValueError, match='5 class names for 6'):
    evaluation.classification_metrics(uniform, [0, 1], ['a'] * 5)
