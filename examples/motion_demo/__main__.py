"""The demo's command line (`python -m examples.motion_demo --help`): a preset, seeds, an output folder, and the few
recipe settings worth trying, passed on to the networks' recipes as `official_d3d.train` flags."""

# First, before anything imports TensorFlow (also in worker processes, which 'spawn' starts from this module as
# __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import dataclasses
from typing import Dict, Tuple

from absl import flags

from d3d_core import cli
from examples.motion_demo import config as demo_config
from examples.motion_demo import pipeline
from official_d3d import train_lib
from official_d3d.configs import d3d_config
from official_d3d.modeling.backbones import s3dg

# The D3D student's distillation flags, named as official_d3d.train names them.
STUDENT_FLAGS = ('distill_weight', 'distill_target', 'distill_loss', 'distill_temperature', 'distill_use_head',
                 'distill_start_step', 'distill_ramp_steps', 'distill_end_step')


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  defaults = demo_config.DemoConfig()
  flags.DEFINE_string('output_dir', defaults.output_dir, 'Folder for everything the demo writes.',
                      flag_values=flag_values)
  flags.DEFINE_list('seed', [str(defaults.seed)], 'Seed of the networks\' initial weights and input order; several '
                    '(0,1,2) train one set each under <output_dir>/seed_<N>, on the same videos and records in '
                    '<output_dir>, and print the mean and spread.', flag_values=flag_values)
  flags.DEFINE_integer('dataset_seed', defaults.dataset.seed, 'Seed of the generated videos: one data set for every '
                       '--seed.', flag_values=flag_values)
  flags.DEFINE_enum('class_set', 'kinds_x_motions', sorted(demo_config.CLASS_SETS), 'kinds_x_motions: 8 classes, '
                    'an object\'s colour (which one frame shows) x its direction of motion (which flow shows); '
                    'motions: the 8 directions alone, which one frame cannot tell apart.', flag_values=flag_values)
  flags.DEFINE_integer('validation_videos_per_class', defaults.validation_videos_per_class, 'For choosing recipes: '
                       'hold out this many of each class\'s training videos and evaluate on them instead of the test '
                       'videos (BUILD_NOTES.md: 12). 0: train on all training videos, evaluate on the test split.',
                       flag_values=flag_values)
  flags.DEFINE_bool('quick', False, 'Smoke preset of a couple of minutes: tiny videos and training '
                    '(recipes/quick.flags).', flag_values=flag_values)
  flags.DEFINE_integer('train_steps', None, 'Training steps of the RGB baseline and the D3D student, the first tenth '
                       'warming up; a multiple of the recipes\' --steps_per_loop (20; 3 with --quick). The student\'s '
                       'distillation keeps the recipe\'s steps (--distill_start_step ...). Default: the recipe.',
                       flag_values=flag_values)
  flags.DEFINE_integer('teacher_steps', None, 'Training steps of the flow teacher, as --train_steps. Default: the '
                       'recipe.', flag_values=flag_values)
  flags.DEFINE_float('distill_weight', None, 'Weight of the distillation loss of the D3D student. Default: the '
                     'recipe.', flag_values=flag_values)
  flags.DEFINE_enum('distill_target', None, d3d_config.DISTILL_TARGETS + s3dg.ENDPOINTS, 'What the student mimics: '
                    'the teacher\'s logits, pooled features, or a backbone endpoint\'s feature map. Default: the '
                    'recipe.', flag_values=flag_values)
  flags.DEFINE_enum('distill_loss', None, d3d_config.DISTILL_LOSSES, 'l2, or kl (temperature KL on logits).',
                    flag_values=flag_values)
  flags.DEFINE_float('distill_temperature', None, 'Temperature of the kl distillation loss.', flag_values=flag_values)
  flags.DEFINE_bool('distill_use_head', None, 'A training-only linear head predicts the teacher\'s target from the '
                    'student\'s pooled features (at a feature map: a 1x1x1 adaptor from the student\'s map), '
                    'instead of the student\'s own output mimicking it. Default: the recipe.', flag_values=flag_values)
  flags.DEFINE_integer('distill_start_step', None, 'Step from which the student is distilled (labels alone before).',
                       flag_values=flag_values)
  flags.DEFINE_integer('distill_ramp_steps', None, 'Steps over which the distillation weight then grows to its '
                       'value.', flag_values=flag_values)
  flags.DEFINE_integer('distill_end_step', None, 'Step from which the student learns from the labels alone again. '
                       'Default: the recipe.', flag_values=flag_values)
  flags.DEFINE_integer('convert_workers', None, 'Processes computing TV-L1 flow; 0: all cores. Default: the preset '
                       '(all cores; 1 with --quick).', flag_values=flag_values)


def overrides_from_flags(preset: demo_config.DemoConfig, flag_values: flags.FlagValues) -> Dict[str, Tuple[str, ...]]:
  """The preset's flags after each recipe, then those of this command line."""
  overrides = {name: list(preset.overrides.get(name, ())) for name in demo_config.NETWORKS}
  for flag, names in (('teacher_steps', ('flow_teacher',)), ('train_steps', ('rgb_baseline', 'd3d_student'))):
    steps = flag_values[flag].value
    for name in names if steps is not None else ():
      overrides[name] += [f'--train_steps={steps}', f'--warmup_steps={steps // 10}']
  overrides['d3d_student'] += [f'--{name}={flag_values[name].value}' for name in STUDENT_FLAGS
                               if flag_values[name].value is not None]
  return {name: tuple(lines) for name, lines in overrides.items()}


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> demo_config.DemoConfig:
  """The preset (default or --quick) with the flags given on the command line."""
  preset = demo_config.QUICK_CONFIG if flag_values.quick else demo_config.DemoConfig()
  workers = flag_values.convert_workers
  class_set = demo_config.CLASS_SETS[flag_values.class_set]
  counts = preset.dataset if flag_values.quick else class_set  # --quick: its few videos a class
  dataset = dataclasses.replace(class_set, videos_per_class_train=counts.videos_per_class_train,
                                videos_per_class_test=counts.videos_per_class_test, seed=flag_values.dataset_seed)
  return dataclasses.replace(preset, output_dir=flag_values.output_dir, dataset=dataset,
                             validation_videos_per_class=flag_values.validation_videos_per_class,
                             overrides=overrides_from_flags(preset, flag_values),
                             convert_workers=preset.convert_workers if workers is None else workers)


def main(argv):
  del argv  # the flags parser refuses arguments that are not flags
  try:
    seeds = [int(seed) for seed in flags.FLAGS.seed]
  except ValueError:
    raise d3d_config.ConfigError(f'--seed takes comma-separated integers, got {",".join(flags.FLAGS.seed)}') from None
  pipeline.run_seeds(config_from_flags(), seeds)


if __name__ == '__main__':
  define_flags()
  cli.run_main(main, train_lib.USER_ERRORS, interrupted='rerun the same command to resume: finished steps are kept')
