"""The converter as an Apache Beam pipeline, for conversions that outgrow one machine.

It runs the same per-video function as the local driver (`convert_lib.convert_video`) and writes the same records,
shard names and label map; only which video lands in which shard differs. Any Beam runner works: DirectRunner by
default, Dataflow, Flink or Spark through pipeline options, e.g.
`--beam_options="--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp"`; remote workers must be
able to import this project and its requirements (Beam's `--setup_file`, `--requirements_file` or a custom
container). On one machine, `--runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=N`
(the DirectRunner's multi-process mode; the DirectRunner itself tries Beam's Prism runner first) writes the same
records; its workers are fresh Python processes, which find this project from the repository root or when it is
installed or on PYTHONPATH. Videos and outputs may be on gs://. Beam retries failed bundles itself, so
there is no resume: a rerun rewrites every shard. Like the local driver, a run holds a local output folder, so that no
other conversion writes there at the same time.
"""

import json
import os
import shlex
import time
from typing import Sequence, Union

import apache_beam as beam
import tensorflow as tf
from apache_beam.options import pipeline_options

from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import flow_choice

_LOG_TAG = 'log'


class _ConvertVideoFn(beam.DoFn):
  """Converts one (video, label index) task; emits its record, and one JSON line for the report."""

  def __init__(self, config: convert_lib.ConversionConfig):
    super().__init__()
    self._config = config
    self._flow_backend = None

  def setup(self):
    flow_choice.set_worker_threads(1)  # runners give each core its own worker: one core per conversion
    self._flow_backend = flow_backends.create_backend(self._config.flow)  # one per DoFn: backends are not shared

  def process(self, task: convert_lib.Task):
    entry, label_index = task
    result = convert_lib.convert_video(entry, label_index, self._config, self._flow_backend)
    if result.record is not None:
      yield result.record
    log = {'media_id': result.media_id, 'path': result.path, 'frames': result.num_frames, 'reason': result.reason}
    yield beam.pvalue.TaggedOutput(_LOG_TAG, json.dumps(log, sort_keys=True))


def _log_prefix(config: convert_lib.ConversionConfig) -> str:
  return os.path.join(config.output_dir, f'.{config.name}.beam_log')


def build_pipeline(pipeline: beam.Pipeline, job: convert_lib.Job, config: convert_lib.ConversionConfig) -> None:
  """Create -> Reshuffle (spread videos over workers) -> convert -> WriteToTFRecord, plus a per-video log."""
  outputs = (pipeline
             | 'Videos' >> beam.Create(job.tasks)
             | 'Spread' >> beam.Reshuffle()
             | 'Convert' >> beam.ParDo(_ConvertVideoFn(config)).with_outputs(_LOG_TAG, main='records'))
  _ = outputs.records | 'WriteRecords' >> beam.io.WriteToTFRecord(
      os.path.join(config.output_dir, config.name), file_name_suffix='.tfrecord', num_shards=config.num_shards,
      shard_name_template='-SSSSS-of-NNNNN')
  _ = outputs[_LOG_TAG] | 'WriteLog' >> beam.io.WriteToText(
      _log_prefix(config), file_name_suffix='.jsonl', shard_name_template='')


def run_beam(config: convert_lib.ConversionConfig, beam_options: Union[str, Sequence[str]] = ()) -> dict:
  """Runs the conversion on the Beam runner that `beam_options` names; returns the report.

  `beam_options` are Beam pipeline flags, as one string or a list (e.g. "--runner=FlinkRunner --parallelism=8").
  """
  started = time.monotonic()
  args = shlex.split(beam_options) if isinstance(beam_options, str) else list(beam_options)
  with convert_lib.output_folder_lock(config.output_dir):
    # The flow backend is chosen here, as the local driver chooses it: measured with one thread (one per worker),
    # for one worker's share of the videos (a runner's number of workers is its own).
    job = convert_lib.prepare_job(config)
    config = job.config
    for shard_path in convert_lib.shard_paths(config.output_dir, config.name, config.num_shards):
      # Beam puts other videos in each shard than the local driver: a later local rerun must not keep any shard.
      summary = convert_lib.summary_path(shard_path)
      if tf.io.gfile.exists(summary):
        tf.io.gfile.remove(summary)
    # The compile cache for the worker processes that a local runner starts.
    with flow_backends.compile_cache(config.flow.compile_cache if config.flow.backend == 'tf' else ''), \
        beam.Pipeline(options=pipeline_options.PipelineOptions(args)) as pipeline:
      build_pipeline(pipeline, job, config)

  log_path = _log_prefix(config) + '.jsonl'
  with tf.io.gfile.GFile(log_path) as f:
    logs = [json.loads(line) for line in f if line.strip()]
  written = [log for log in logs if not log['reason']]
  frames = sum(log['frames'] for log in written)
  failures = job.missing + [{k: log[k] for k in ('media_id', 'path', 'reason')} for log in logs if log['reason']]
  return convert_lib.build_report(job, 'beam', videos_written=len(written), frames_written=frames,
                                  failures=failures, seconds=time.monotonic() - started, frames_this_run=frames)
