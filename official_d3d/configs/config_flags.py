"""Command-line flags of `ExperimentConfig`: one flag per leaf field, named as the field (the distillation section's
with a `distill_` prefix), its help the field's documentation and its default the dataclass default.

Flags only fill the config; every check and default lives in `d3d_config`.
"""

import dataclasses

from absl import flags

from official_d3d.configs import d3d_config

SECTION_FLAG_PREFIXES = {'data': '', 'model': '', 'distillation': 'distill_', 'train': ''}


def _config_fields():
  """(flag name, section or None, field) for every leaf field of ExperimentConfig."""
  for field in dataclasses.fields(d3d_config.ExperimentConfig):
    default = getattr(d3d_config.ExperimentConfig(), field.name)
    if dataclasses.is_dataclass(default):
      prefix = SECTION_FLAG_PREFIXES[field.name]
      for leaf in dataclasses.fields(default):
        yield prefix + leaf.name, field.name, leaf
    else:
      yield field.name, None, field


def _field_default(section, field):
  config = d3d_config.ExperimentConfig()
  return getattr(getattr(config, section) if section else config, field.name)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one flag per config field, with the dataclass default."""
  for flag_name, section, field in _config_fields():
    default = _field_default(section, field)
    help_text = field.metadata['help']
    if isinstance(default, bool):
      flags.DEFINE_bool(flag_name, default, help_text, flag_values=flag_values)
    elif isinstance(default, int):
      flags.DEFINE_integer(flag_name, default, help_text, flag_values=flag_values)
    elif isinstance(default, float):
      flags.DEFINE_float(flag_name, default, help_text, flag_values=flag_values)
    elif isinstance(default, tuple):
      flags.DEFINE_list(flag_name, [str(v) for v in default], help_text + ' (comma-separated integers)',
                        flag_values=flag_values)
    else:
      flags.DEFINE_string(flag_name, default, help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> d3d_config.ExperimentConfig:
  """The ExperimentConfig the flags describe."""
  config = d3d_config.ExperimentConfig()
  for flag_name, section, field in _config_fields():
    value = flag_values[flag_name].value
    if isinstance(_field_default(section, field), tuple):
      try:
        value = tuple(int(v) for v in value)
      except ValueError as error:
        raise d3d_config.ConfigError(f'--{flag_name} takes comma-separated integers, got {value}') from error
    setattr(getattr(config, section) if section else config, field.name, value)
  return config
