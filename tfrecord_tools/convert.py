r"""Converts videos into RGB + optical-flow TFRecords (MediaSequence SequenceExamples), sharded and resumable.

  python -m tfrecord_tools.convert --source=ucf101 --input=ucfTrainTestlist --video_root=UCF-101 \
      --split=1 --subset=train --output_dir=records/ucf101 --name=train --num_shards=64

Writes `<output_dir>/<name>-SSSSS-of-NNNNN.tfrecord`, `label_map.txt`, `<name>.settings.json` and
`<name>.report.json`. Rerunning the same command resumes; a second conversion into a folder that a live one holds is
refused. Exit status: 0 when every video was converted, 1 when some were skipped (the report lists them with their
reasons), 2 for a usage or setup error (nothing, or not everything, could be converted: the `error:` line says why;
D3D_TRACEBACK=1 adds the traceback), 130 on Ctrl-C (rerun the same command to resume).
"""

# First, before anything imports TensorFlow (also in worker processes, which 'spawn' starts from this module as
# __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import dataclasses
import json

from absl import flags
from absl import logging

from d3d_core import schema
from d3d_core import tvl1_params
from d3d_core import video_reader
from tfrecord_tools import cli
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import manifests
from tfrecord_tools import sequence_example

_TVL1_PREFIX = 'tvl1_'

# One --tvl1_<name> flag per field of Tvl1Params (OpenCV's DualTVL1 parameters), its default OpenCV's.
_TVL1_HELP = {
    'tau': 'time step of the numerical scheme',
    'lambda_': 'weight of the data term: smaller gives smoother flow',
    'theta': 'tightness of the coupling between the two sub-problems',
    'nscales': 'pyramid levels',
    'warps': 'warpings per pyramid level',
    'epsilon': 'stopping threshold of the inner loop',
    'inner_iterations': 'iterations of the inner loop',
    'outer_iterations': 'iterations of the outer loop',
    'scale_step': 'pyramid downscaling factor, in (0, 1)',
    'gamma': 'weight of the illumination-change term (0: none)',
    'median_filtering': 'median filter size applied to the flow between warps',
}


def define_flags() -> None:
  """Command-line flags; defined only when run as a program, so importing this module defines none."""
  flags.DEFINE_enum('source', 'csv', manifests.SOURCES, 'Kind of video list; see tfrecord_tools/manifests.py.')
  flags.DEFINE_string('input', None, 'The CSV file (csv, kinetics), the class-folder root (folder), or the folder of '
                      'the official split files (ucf101, hmdb51).')
  flags.DEFINE_string('video_root', '', 'Folder of the videos (ucf101, hmdb51, kinetics; csv: base of relative '
                      'paths).')
  flags.DEFINE_integer('split', 1, 'Official split 1..3 (ucf101, hmdb51).')
  flags.DEFINE_string('subset', '', 'train or test (ucf101, hmdb51); kinetics: keep only rows of this split column.')
  flags.DEFINE_string('label_map', '', 'Use this label map (e.g. the train split\'s) instead of the source\'s '
                      'classes.')
  flags.DEFINE_string('output_dir', None, 'Folder of the shards, label map, settings and report.')
  flags.DEFINE_string('name', 'data', 'Shard name prefix: <name>-SSSSS-of-NNNNN.tfrecord.')
  flags.DEFINE_integer('num_shards', 8, 'Number of TFRecord files.')
  flags.DEFINE_integer('num_workers', 0, 'Worker processes of the local runner; 0: all cores.')
  flags.DEFINE_float('fps', video_reader.DecodeConfig.fps, 'Output frame rate; frames are resampled by timestamp.')
  flags.DEFINE_integer('short_side', video_reader.DecodeConfig.short_side,
                       'Resize so the short side is this; 0 keeps it.')
  flags.DEFINE_integer('max_frames', 0, 'Keep at most this many frames per video (quick runs); 0: all.')
  flags.DEFINE_enum('flow_backend', flow_backends.AUTO, flow_backends.BACKEND_NAMES,
                    'Optical flow: auto (tf or opencv, whichever finishes this conversion sooner here, measured at '
                    'the start; a resumed conversion keeps its first choice), opencv (TV-L1 on CPU cores), tf (the '
                    'same TV-L1 in TensorFlow, batched and XLA-compiled, on a GPU or CPU), farneback (fast, less '
                    'accurate; for quick experiments), none (RGB-only records).')
  flags.DEFINE_integer('flow_batch_size', 0, 'Frame pairs per TensorFlow TV-L1 call; 0: '
                       f'{flow_backends.GPU_BATCH_SIZE} on a GPU, {flow_backends.CPU_BATCH_SIZE} on a CPU.')
  flags.DEFINE_integer('flow_bucket_multiple', flow_backends.FlowConfig.bucket_multiple,
                       'TensorFlow TV-L1 pads frames to sides that are multiples of this, so that all frame sizes '
                       'share a few compiled programs; the flow inside the frame does not change. 1: no padding.')
  flags.DEFINE_string('flow_compile_cache', None, 'Folder where compiled TensorFlow TV-L1 programs are kept between '
                      f'runs; "" for none. Default: {flow_backends.default_compile_cache()}.')
  flags.DEFINE_float('flow_bound', schema.DEFAULT_FLOW_BOUND,
                     'Flow is clipped to +-this many pixels, then quantised.')
  flags.DEFINE_enum('flow_format', 'jpeg', sequence_example.FLOW_FORMATS,
                    'Flow image encoding: jpeg or lossless png.')
  flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality of RGB (and JPEG flow) frames, 1..100.')
  flags.DEFINE_enum('runner', 'local', ('local', 'beam'), 'local: process pool on this machine, resumable; beam: '
                    'Apache Beam pipeline on the runner named in --beam_options.')
  flags.DEFINE_string('beam_options', '', 'Beam pipeline options, e.g. "--runner=DataflowRunner --project=P '
                      '--region=R --temp_location=gs://B/tmp". Default: DirectRunner.')

  definers = {float: flags.DEFINE_float, int: flags.DEFINE_integer}
  for field in dataclasses.fields(tvl1_params.Tvl1Params):
    definers[field.type](_TVL1_PREFIX + field.name.rstrip('_'), field.default,
                         f'TV-L1: {_TVL1_HELP[field.name]}; the default is OpenCV\'s.')
  flags.DEFINE_bool('tvl1_use_initial_flow', False,
                    'TV-L1: start each frame pair from the flow of the previous pair.')

  flags.mark_flags_as_required(['input', 'output_dir'])


FLAGS = flags.FLAGS


def config_from_flags() -> convert_lib.ConversionConfig:
  tvl1 = tvl1_params.Tvl1Params(**{f.name: FLAGS[_TVL1_PREFIX + f.name.rstrip('_')].value
                                    for f in dataclasses.fields(tvl1_params.Tvl1Params)})
  return convert_lib.ConversionConfig(
      source=manifests.SourceConfig(source=FLAGS.source, input=FLAGS.input, video_root=FLAGS.video_root,
                                    split=FLAGS.split, subset=FLAGS.subset),
      output_dir=FLAGS.output_dir, name=FLAGS.name, num_shards=FLAGS.num_shards, num_workers=FLAGS.num_workers,
      label_map=FLAGS.label_map,
      decode=video_reader.DecodeConfig(fps=FLAGS.fps, short_side=FLAGS.short_side, max_frames=FLAGS.max_frames),
      flow=flow_backends.FlowConfig(
          backend=FLAGS.flow_backend, tvl1=tvl1, use_initial_flow=FLAGS.tvl1_use_initial_flow,
          batch_size=FLAGS.flow_batch_size, bucket_multiple=FLAGS.flow_bucket_multiple,
          compile_cache=flow_backends.default_compile_cache() if FLAGS.flow_compile_cache is None
          else FLAGS.flow_compile_cache),
      encoding=sequence_example.EncodingConfig(jpeg_quality=FLAGS.jpeg_quality, flow_format=FLAGS.flow_format,
                                               flow_bound=FLAGS.flow_bound))


def exit_status(report: dict) -> int:
  return cli.EXIT_SKIPPED if report['videos_failed'] else cli.EXIT_OK


def convert() -> int:
  """Runs the conversion that the flags describe, prints its summary and returns the exit status."""
  config = config_from_flags()
  if FLAGS.runner == 'beam':
    from tfrecord_tools import beam_pipeline  # pylint: disable=g-import-not-at-top  (Beam is slow to import)
    report = beam_pipeline.run_beam(config, FLAGS.beam_options)
  else:
    report = convert_lib.run_local(config)
  path = convert_lib.write_report(config, report)
  summary = {k: report[k] for k in ('videos_written', 'videos_failed', 'frames_written', 'seconds',
                                    'frames_per_second')}
  for failure in report['failures']:
    logging.warning('Skipped %s', failure['reason'])
  print(json.dumps({**summary, 'report': path}))
  return exit_status(report)


def main(argv):
  del argv  # the flags parser refuses arguments that are not flags
  return convert()


if __name__ == '__main__':
  define_flags()
  cli.run_main(main, (ValueError, manifests.ManifestError, convert_lib.ConversionError),
               interrupted='rerun the same command to resume')
