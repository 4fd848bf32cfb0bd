"""Learning-rate schedules with warmup, and the optimizers with decoupled weight decay."""

import keras
import numpy as np
import pytest

from official_d3d.configs import d3d_config
from official_d3d.modeling import optimization


def rates(schedule, steps):
  return np.array([float(schedule(step)) for step in steps])


def test_cosine_rises_linearly_during_warmup_then_decays_to_zero_at_the_last_step():
  config = d3d_config.TrainConfig(learning_rate=0.4, schedule='cosine', warmup_steps=10, train_steps=110)
  schedule = optimization.build_learning_rate(config)
  np.testing.assert_allclose(rates(schedule, [0, 5, 10]), [0.0, 0.2, 0.4], rtol=1e-6)
  # Half-way through the decay, cos(pi / 2): half the peak.
  np.testing.assert_allclose(rates(schedule, [60, 110]), [0.2, 0.0], atol=1e-6)
  assert np.all(np.diff(rates(schedule, range(10, 111))) <= 1e-9)


def test_step_schedule_multiplies_by_the_decay_rate_after_each_boundary():
  config = d3d_config.TrainConfig(learning_rate=0.1, schedule='step', step_boundaries=(60, 70), decay_rate=0.1,
                                  warmup_steps=5, train_steps=80)
  schedule = optimization.build_learning_rate(config)
  np.testing.assert_allclose(rates(schedule, [1, 5, 60, 61, 70, 71, 79]),
                             [0.02, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)


def test_constant_schedule_and_its_serialisation():
  config = d3d_config.TrainConfig(learning_rate=0.03, schedule='constant', warmup_steps=3)
  schedule = optimization.build_learning_rate(config)
  np.testing.assert_allclose(rates(schedule, [0, 1, 3, 1000]), [0.0, 0.01, 0.03, 0.03], rtol=1e-6)
  restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
  np.testing.assert_allclose(rates(restored, [1, 1000]), [0.01, 0.03], rtol=1e-6)


@pytest.mark.parametrize('boundaries, message', [((), 'needs train.step_boundaries'),
                                                 ((70, 60), 'positive and increasing')])
def test_bad_step_boundaries_are_named(boundaries, message):
  config = d3d_config.TrainConfig(schedule='step', step_boundaries=boundaries)
  with pytest.raises(ValueError, match=message):
    optimization.build_learning_rate(config)


@pytest.mark.parametrize('name, optimizer_class', [('sgd', keras.optimizers.SGD), ('adamw', keras.optimizers.AdamW)])
def test_weight_decay_shrinks_kernels_but_not_biases(name, optimizer_class):
  config = d3d_config.TrainConfig(optimizer=name, learning_rate=0.5, weight_decay=0.1, schedule='constant')
  optimizer = optimization.build_optimizer(config)
  assert isinstance(optimizer, optimizer_class)
  layer = keras.layers.Dense(2)
  layer.build((None, 3))
  layer.kernel.assign(np.ones((3, 2)))
  layer.bias.assign(np.ones(2))
  # Zero gradients: only the decay moves the weights, w <- w - lr * weight_decay * w.
  optimizer.apply([np.zeros((3, 2), np.float32), np.zeros(2, np.float32)], [layer.kernel, layer.bias])
  np.testing.assert_allclose(layer.kernel.numpy(), np.full((3, 2), 1 - 0.5 * 0.1), rtol=1e-6)
  np.testing.assert_allclose(layer.bias.numpy(), np.ones(2))


def test_sgd_uses_the_configured_momentum():
  optimizer = optimization.build_optimizer(d3d_config.TrainConfig(momentum=0.9))
  assert optimizer.momentum == 0.9
