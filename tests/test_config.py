"""The config's lists of choices: each choice is implemented once, and the config is where a wrong one is refused."""

import dataclasses

import pytest

from official_d3d import evaluation
from official_d3d import train_lib
from official_d3d.configs import d3d_config
from official_d3d.modeling import d3d_model
from official_d3d.modeling import optimization


@pytest.mark.parametrize('choices, implementations', [
    (d3d_config.SCHEDULES, optimization.SCHEDULES),
    (d3d_config.OPTIMIZERS, optimization.OPTIMIZERS),
    (d3d_config.STRATEGIES, train_lib.STRATEGIES),
    (d3d_config.DISTILL_LOSSES, d3d_model.DISTILLATION_LOSSES),
    (d3d_config.FUSIONS, evaluation.FUSIONS),
])
def test_every_choice_the_config_offers_is_implemented_and_nothing_else(choices, implementations):
  assert tuple(implementations) == tuple(choices)


@pytest.mark.parametrize('section, name, setting', [
    ('train', 'schedule', 'train.schedule'),
    ('train', 'optimizer', 'train.optimizer'),
    ('train', 'distribution_strategy', 'train.distribution_strategy'),
    ('train', 'mixed_precision', 'train.mixed_precision'),
    ('distillation', 'loss', 'distillation.loss'),
    ('model', 'pixel_range', 'model.pixel_range'),
])
def test_an_unknown_choice_is_refused_by_the_config_naming_the_setting(section, name, setting):
  config = d3d_config.ExperimentConfig(data=d3d_config.DataConfig(num_classes=3))
  config.validate()
  setattr(config, section, dataclasses.replace(getattr(config, section), **{name: 'nonsense'}))
  with pytest.raises(d3d_config.ConfigError, match=f"{setting} must be one of .*got 'nonsense'"):
    config.validate()
