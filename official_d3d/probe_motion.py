r"""Measures how much motion each layer of trained networks holds: the motion probe of the D3D paper.

  python -m official_d3d.probe_motion --networks=runs/flow,runs/rgb,runs/d3d --output_dir=runs/probe

For each network (a model_dir, a checkpoint prefix or imported `.weights.h5`) and endpoint, linear readouts predict
the TV-L1 flow of clips of videos the networks did not train on from the network's own input, each fold of videos by
a readout fitted on the others; the end-point errors, beside those of predicting zero flow and the mean flow, go to
`<output_dir>/motion_probe.json` and `motion_probe.png` (`official_d3d/motion_probe.py` says how). The records must
hold RGB and flow. Errors end the
command with one `error:` line and status 1.
"""

# First, before anything imports TensorFlow (also in worker processes, which 'spawn' starts from this module as
# __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

from absl import flags

from d3d_core import cli
from official_d3d import motion_probe
from official_d3d import train_lib


def define_flags() -> None:
  defaults = motion_probe.ProbeConfig()
  flags.DEFINE_list('networks', None, 'Trained networks to probe: model_dirs, checkpoint prefixes or .weights.h5.')
  flags.DEFINE_list('names', [], 'Their names in the results (default: folder or file names).')
  flags.DEFINE_list('endpoints', list(defaults.endpoints), 'Backbone endpoints to probe, input side first.')
  flags.DEFINE_string('records', '', 'Records of videos the networks did not train on, with RGB and flow, on which the '
                      'readouts are cross-fitted and measured (default: the first network\'s data.eval_pattern).')
  flags.DEFINE_integer('num_clips', defaults.num_clips, 'Evenly spaced clips per video.')
  flags.DEFINE_integer('num_folds', defaults.num_folds, 'Folds of videos: each is predicted by readouts fitted on the '
                       'others.')
  flags.DEFINE_integer('max_videos', defaults.max_videos, 'At most this many videos (0: all); their clips are kept '
                       'in memory.')
  flags.DEFINE_integer('batch_size', defaults.batch_size, 'Clips per forward pass.')
  flags.DEFINE_string('output_dir', None, 'Folder of motion_probe.json and motion_probe.png.')
  flags.mark_flags_as_required(['networks', 'output_dir'])


def main(argv):
  del argv  # Everything comes in through flags.
  config = motion_probe.ProbeConfig(
      networks=tuple(flags.FLAGS.networks), names=tuple(flags.FLAGS.names), endpoints=tuple(flags.FLAGS.endpoints),
      records=flags.FLAGS.records, num_clips=flags.FLAGS.num_clips, num_folds=flags.FLAGS.num_folds,
      max_videos=flags.FLAGS.max_videos,
      batch_size=flags.FLAGS.batch_size, output_dir=flags.FLAGS.output_dir)
  results = motion_probe.run(config)
  print(motion_probe.summary(results))


if __name__ == '__main__':
  define_flags()
  cli.run_main(main, train_lib.USER_ERRORS)
