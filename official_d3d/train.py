r"""Trains and evaluates the flow teacher, the RGB baseline and the D3D student.

  python -m official_d3d.train --flagfile=official_d3d/configs/experiments/ucf101_d3d.flags \
      --model_dir=/tmp/ucf101_d3d --mode=train_and_eval

Flags only fill `official_d3d.configs.d3d_config.ExperimentConfig` (`configs/config_flags.py`: one flag per field,
documented there; the distillation fields take a `distill_` prefix); `official_d3d.train_lib.run_experiment` does
the rest. A run that cannot go on stops with one `error: ...` line and exit status 1 (`D3D_TRACEBACK=1` adds the
traceback); Ctrl-C stops it when the running step (or the loop's checkpoint) is done, a second Ctrl-C at once, with
status 130, and the same command resumes from the last checkpoint.
"""

# First, before anything imports TensorFlow (also in worker processes, which 'spawn' starts from this module as
# __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import os

from absl import flags

from d3d_core import cli
from official_d3d import train_lib
from official_d3d.configs import config_flags


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--mode, and one flag per config field (key flags of this program: `--helpshort` lists them)."""
  flags.DEFINE_enum('mode', 'train_and_eval', train_lib.MODES, 'What to run.', flag_values=flag_values)
  config_flags.define_flags(flag_values)
  flags.adopt_module_key_flags(config_flags, flag_values=flag_values)


def main(argv):
  del argv  # Everything comes in through flags.
  config = config_flags.config_from_flags()
  results = train_lib.run_experiment(config, flags.FLAGS.mode)
  if 'eval' in results:
    metrics = results['eval']
    print(f'evaluation at step {metrics["step"]}: top-1 {metrics["top_1"]:.4f}, top-5 {metrics["top_5"]:.4f}, mean '
          f'class accuracy {metrics["mean_class_accuracy"]:.4f} over {metrics["num_videos"]} videos '
          f'({os.path.join(config.model_dir, train_lib.EVAL_METRICS_FILENAME)})')


if __name__ == '__main__':
  define_flags()
  cli.run_main(main, train_lib.USER_ERRORS, interrupted='rerun the same command to resume from the last checkpoint')
