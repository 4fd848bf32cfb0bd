"""Videos -> RGB + flow SequenceExamples in sharded TFRecords: the per-video function and the local driver.

The local driver runs the per-video function in a process pool and writes shards one after the other:

- One conversion at a time per output folder: a run holds a lock on `<output_dir>/.lock`, which the OS
  releases when the run ends however it ends (even killed), and a second run into the folder is refused.
- Videos are sorted by media id and cut into `num_shards` contiguous blocks, so a video's shard never changes.
- A shard is written to a hidden temporary file of its own process, then its completion marker (a hidden
  `.done.json`: records, frames, failures, and the file's byte size and SHA-256) is written, then the temporary file
  is renamed to `<name>-SSSSS-of-NNNNN.tfrecord`.
- A rerun of the same command keeps the shards that still match their markers and redoes the others: a shard that
  changed after it was finished is logged and rewritten, so a job killed at any moment is restored without
  duplicates or damage. The job's settings, saved in `<name>.settings.json`, must match, or the run is refused:
  mixing shards made with different settings would corrupt the data set.

Bad videos are skipped and listed, with their reason, in `<name>.report.json`.
"""

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.pool
import os
import signal
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf
import tqdm
from absl import logging

from d3d_core import cli
from d3d_core import folder_lock
from d3d_core import json_files
from d3d_core import label_map
from d3d_core import quiet_start
from d3d_core import video_reader
from tfrecord_tools import flow_backends
from tfrecord_tools import flow_choice
from tfrecord_tools import manifests
from tfrecord_tools import sequence_example

_SETTINGS_FORMAT = 1
_READ_CHUNK_BYTES = 16 << 20

Task = Tuple[manifests.VideoEntry, int]  # a video and its label index


class ConversionError(Exception):
  """A conversion that cannot go on, for a reason the user can fix; the message names the file or folder."""


class ConversionSetupError(ConversionError):
  """The job cannot start: the output folder is in use or unusable, or the job clashes with what is there."""


class OutputWriteError(ConversionError):
  """A shard could not be written (e.g. a full disk); it is not marked complete, so a rerun redoes it."""


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
  """Everything a conversion needs; flags only fill this in."""
  source: manifests.SourceConfig
  output_dir: str
  name: str = 'data'  # shard files are <name>-SSSSS-of-NNNNN.tfrecord
  num_shards: int = 8
  num_workers: int = 0  # 0: all cores of this machine
  label_map: str = ''  # an existing label map to use (e.g. the train split's), instead of the source's classes
  decode: video_reader.DecodeConfig = video_reader.DecodeConfig()
  flow: flow_backends.FlowConfig = flow_backends.FlowConfig()
  encoding: sequence_example.EncodingConfig = sequence_example.EncodingConfig()

  def __post_init__(self):
    if not self.output_dir:
      raise ValueError('output_dir is required')
    if not self.name or '/' in self.name:
      raise ValueError(f'name must be a non-empty file name prefix, got {self.name!r}')
    if not 1 <= self.num_shards <= 99999:
      raise ValueError(f'num_shards must be in 1..99999, got {self.num_shards}')
    if self.num_workers < 0:
      raise ValueError(f'num_workers must be >= 0 (0: all cores), got {self.num_workers}')


@dataclasses.dataclass
class VideoResult:
  """The outcome for one video: a serialized SequenceExample, or the reason it was skipped."""
  media_id: str
  path: str
  record: Optional[bytes] = None
  num_frames: int = 0
  reason: str = ''

  def failure(self) -> Dict[str, str]:
    return {'media_id': self.media_id, 'path': self.path, 'reason': self.reason}


@dataclasses.dataclass
class Job:
  """A prepared conversion: its config with the flow backend resolved, the videos with their label indices, and
  manifest rows that have no video."""
  config: ConversionConfig
  flow_reason: str  # why config.flow.backend computes the flow (`flow_choice`)
  tasks: List[Task]
  class_names: List[str]
  missing: List[Dict[str, str]]


def convert_video(entry: manifests.VideoEntry, label_index: int, config: ConversionConfig,
                  flow_backend: Optional[flow_backends.FlowBackend]) -> VideoResult:
  """Decodes, computes flow and encodes one video; never raises for a bad video, but says why it was skipped."""
  try:
    video = video_reader.read_video(entry.path, config.decode, entry.start, entry.end)
    flow = flow_backend.video_flow(video.frames) if flow_backend else None
    example = sequence_example.build_sequence_example(
        media_id=entry.media_id, label_index=label_index, label_string=entry.label, frames=video.frames,
        timestamps_us=video.timestamps_us, frame_rate=config.decode.fps, flow=flow, data_path=entry.path,
        encoding=config.encoding)
  except video_reader.VideoDecodeError as error:
    return VideoResult(entry.media_id, entry.path, reason=str(error))
  except Exception as error:  # pylint: disable=broad-except
    # One unexpected failure (e.g. an OpenCV error on a strange stream) must not end a job of many hours.
    if cli.traceback_requested():
      logging.exception('Unexpected error converting %s', entry.path)
    return VideoResult(entry.media_id, entry.path, reason=f'{entry.path}: {type(error).__name__}: {error}')
  # Deterministic serialisation (sorted feature maps): the same video gives the same bytes in every run and runner.
  record = example.SerializeToString(deterministic=True)
  return VideoResult(entry.media_id, entry.path, record=record, num_frames=len(video.frames))


def shard_paths(output_dir: str, name: str, num_shards: int) -> List[str]:
  return [os.path.join(output_dir, f'{name}-{i:05d}-of-{num_shards:05d}.tfrecord') for i in range(num_shards)]


def assign_shards(tasks: Sequence[Task], num_shards: int) -> List[List[Task]]:
  """Contiguous blocks of the (sorted) tasks: shard i gets tasks [i * n // S, (i + 1) * n // S)."""
  n = len(tasks)
  return [list(tasks[i * n // num_shards:(i + 1) * n // num_shards]) for i in range(num_shards)]


def _hidden(path: str, suffix: str) -> str:
  """A hidden file next to `path`, so globs like `<name>-*` match only finished shards."""
  return os.path.join(os.path.dirname(path), '.' + os.path.basename(path) + suffix)


def summary_path(shard_path: str) -> str:
  return _hidden(shard_path, '.done.json')


def settings_path(output_dir: str, name: str) -> str:
  return os.path.join(output_dir, f'{name}.settings.json')


def report_path(output_dir: str, name: str) -> str:
  return os.path.join(output_dir, f'{name}.report.json')


def _remove_stale_temporaries(output_dir: str) -> None:
  """Removes the temporary files of killed runs; only while holding the folder, when no other run writes there."""
  for path in tf.io.gfile.glob(os.path.join(output_dir, '.*' + json_files.TEMPORARY_SUFFIX)):
    tf.io.gfile.remove(path)


def _job_settings(config: ConversionConfig, tasks: Sequence[Task], class_names: Sequence[str]) -> dict:
  """What determines the records; num_workers, the runner and the flow's batching do not, so they may change."""
  videos = hashlib.sha256()
  for entry, label_index in tasks:
    videos.update(f'{entry.media_id}\t{entry.path}\t{label_index}\t{entry.start}\t{entry.end}\n'.encode())
  settings = {
      'format': _SETTINGS_FORMAT,
      'source': dataclasses.asdict(config.source),
      'num_shards': config.num_shards,
      'decode': dataclasses.asdict(config.decode),
      'flow': config.flow.record_settings(),
      'encoding': dataclasses.asdict(config.encoding),
      'class_names': list(class_names),
      'num_videos': len(tasks),
      'videos_sha256': videos.hexdigest(),
  }
  return json.loads(json.dumps(settings))  # the form it has after a round trip through the file


def _check_label_map(output_dir: str, class_names: Sequence[str]) -> None:
  path = os.path.join(output_dir, label_map.FILENAME)
  if tf.io.gfile.exists(path):
    existing = label_map.read_label_map(path)
    if existing != list(class_names):
      raise ConversionSetupError(
          f'{path} holds a different class list ({len(existing)} classes) than this job ({len(class_names)}); '
          f'to convert another split with the same classes pass --label_map={path}')
  else:
    label_map.write_label_map(class_names, path)


def _check_settings(config: ConversionConfig, settings: dict) -> None:
  path = settings_path(config.output_dir, config.name)
  if tf.io.gfile.exists(path):
    saved = json_files.read_json(path)
    if saved != settings:
      differing = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
      raise ConversionSetupError(
          f'{path} was written by a conversion with other settings (differing: {", ".join(differing)}); resuming '
          'would mix records of both. Use another --output_dir or --name, or delete that conversion\'s files.')
  expected = set(shard_paths(config.output_dir, config.name, config.num_shards))
  foreign = [p for p in tf.io.gfile.glob(os.path.join(config.output_dir, f'{config.name}-*-of-*.tfrecord'))
             if p not in expected]
  if foreign:
    raise ConversionSetupError(f'{config.output_dir} holds shards of another conversion named {config.name!r} '
                               f'(e.g. {foreign[0]}); use another --output_dir or --name, or delete them')
  json_files.write_json(path, settings)


def _make_output_folder(output_dir: str) -> None:
  if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
    raise ConversionSetupError(f'output folder {output_dir} is a file, not a folder')
  try:
    tf.io.gfile.makedirs(output_dir)
  except tf.errors.OpError as error:
    raise ConversionSetupError(f'output folder {output_dir} cannot be made ({cli.error_reason(error)})') from None


@contextlib.contextmanager
def output_folder_lock(output_dir: str) -> Iterator[None]:
  """Makes `output_dir` and holds it for one conversion (`d3d_core.folder_lock`: the OS releases the lock when
  the process ends, however it ends; remote folders have no locks).

  Raises:
    ConversionSetupError: another live conversion holds the folder, or the folder cannot be made or locked.
  """
  _make_output_folder(output_dir)
  try:
    with folder_lock.hold(output_dir, 'conversion'):
      yield
  except folder_lock.FolderLockedError as error:
    raise ConversionSetupError(f'output folder {error}') from None


def _earlier_flow_backend(config: ConversionConfig) -> Optional[Tuple[str, str]]:
  """(backend, why) that `auto` keeps: this job's from an earlier run (a resumed conversion), else that of another
  conversion in the same folder with the same decoding and TV-L1 settings (another split of the data set), so that
  a data set holds one implementation's flow; None for a new data set."""
  own = settings_path(config.output_dir, config.name)
  others = sorted(set(tf.io.gfile.glob(os.path.join(config.output_dir, '*.settings.json'))) - {own})
  same_flow = json.loads(json.dumps({'decode': dataclasses.asdict(config.decode),
                                     'flow': {**config.flow.record_settings(), 'backend': ''}}))
  for path in [own, *others]:
    if not tf.io.gfile.exists(path):
      continue
    saved = json_files.read_json(path)
    backend = saved.get('flow', {}).get('backend')
    if backend not in ('tf', 'opencv'):
      continue
    if path == own:
      return backend, 'the backend this data set was started with'
    if {'decode': saved.get('decode'), 'flow': {**saved['flow'], 'backend': ''}} == same_flow:
      return backend, f'as {os.path.basename(path)} in this folder: one data set, one implementation'
  return None


def prepare_job(config: ConversionConfig, workers: Optional['Workers'] = None) -> Job:
  """Reads the manifest, fixes the label indices, resolves the flow backend (`flow_choice`: measured in `workers`
  where given, for their number and threads; else, as Beam's workers run, in one thread for one worker), and checks
  and records the job in output_dir.

  Raises:
    manifests.ManifestError: the split files cannot be read.
    ConversionSetupError: labels outside the label map, settings that clash with output_dir, or an output_dir that
      cannot be made.
  """
  manifest = manifests.read_manifest(config.source)
  class_names = label_map.read_label_map(config.label_map) if config.label_map else manifest.class_names
  if not class_names:
    raise ConversionSetupError(f'{config.source.input}: no classes found')
  label_index = {name: i for i, name in enumerate(class_names)}
  unknown = sorted({e.label for e in manifest.entries if e.label not in label_index})
  if unknown:
    raise ConversionSetupError(f'labels not in the label map {config.label_map or "of the source"}: {unknown[:10]}')
  tasks = [(entry, label_index[entry.label]) for entry in manifest.entries]
  _make_output_folder(config.output_dir)
  _check_label_map(config.output_dir, class_names)
  choice = flow_choice.resolve(config.flow, manifest.entries, config.decode, workers.threads if workers else 1,
                               workers.num_workers if workers else 1, earlier=_earlier_flow_backend(config),
                               workers=workers and functools.partial(workers.pool, len(tasks)))
  config = dataclasses.replace(config, flow=choice.flow)
  print(f'{config.name}: optical flow by {config.flow.backend} ({choice.reason})', flush=True)
  _check_settings(config, _job_settings(config, tasks, class_names))
  missing = [dataclasses.asdict(m) for m in manifest.missing]
  return Job(config=config, flow_reason=choice.reason, tasks=tasks, class_names=list(class_names), missing=missing)


def build_report(job: Job, runner: str, videos_written: int, frames_written: int, failures: List[Dict[str, str]],
                 seconds: float, frames_this_run: int) -> dict:
  """The JSON report: totals over the whole data set; seconds and frames per second of this run only."""
  config = job.config
  return {
      'name': config.name,
      'output_dir': config.output_dir,
      'runner': runner,
      'flow': {**config.flow.record_settings(), 'reason': job.flow_reason},
      'videos_written': videos_written,
      'videos_failed': len(failures),
      'frames_written': frames_written,
      'failures': sorted(failures, key=lambda f: (f['media_id'], f['path'])),
      'seconds': round(seconds, 3),
      'frames_this_run': frames_this_run,
      'frames_per_second': round(frames_this_run / seconds, 3) if seconds > 0 else 0.0,
  }


def write_report(config: ConversionConfig, report: dict) -> str:
  path = report_path(config.output_dir, config.name)
  json_files.write_json(path, report)
  return path


def resolve_num_workers(num_workers: int) -> int:
  """0 means every core this process may run on."""
  if num_workers:
    return num_workers
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def threads_per_worker(num_workers: int) -> int:
  """TensorFlow threads of each of `num_workers` worker processes: the cores shared out, at least one."""
  return max(1, resolve_num_workers(0) // num_workers)


def _convert_task(task: Task, config: ConversionConfig) -> VideoResult:
  """In a worker: one video, with the process's backend for `config.flow` (kept from one video to the next)."""
  entry, label_index = task
  return convert_video(entry, label_index, config, flow_backends.shared_backend(config.flow))


class Workers:
  """The local driver's worker processes ('spawn': the parent has TensorFlow loaded), started on first use: by
  `--flow_backend=auto`'s measurement (`flow_choice.measure`), which the other workers' start-up overlaps and whose
  TensorFlow worker keeps its compiled program, or by the conversion. A conversion that needs no processes (OpenCV on
  one worker, or one video) runs in this process.

  Workers start TensorFlow with their share of the cores and, where its TV-L1 may run, with the compile cache
  (`flow_backends.compile_cache`: this process has read TensorFlow's settings already).
  """

  def __init__(self, config: ConversionConfig, num_workers: int, threads: int):
    self._config = config
    self.num_workers = num_workers
    self.threads = threads
    self._pool = None

  def pool(self, max_workers: Optional[int] = None) -> multiprocessing.pool.Pool:
    """The workers, started now if they are not yet: `num_workers`, or `max_workers` where fewer."""
    if self._pool is None:
      context = multiprocessing.get_context('spawn')
      cache = self._config.flow.compile_cache if self._config.flow.backend in ('tf', flow_backends.AUTO) else ''
      # Processes started inside inherit SIGINT ignored: Ctrl-C interrupts only this one, which then stops them.
      with cli.sigint_handled_by(signal.SIG_IGN), flow_backends.compile_cache(cache):
        initializer, initargs = quiet_start.quiet_initializer(flow_choice.set_worker_threads, self.threads)
        self._pool = context.Pool(min(self.num_workers, max_workers or self.num_workers), initializer=initializer,
                                  initargs=initargs)
    return self._pool

  def results(self, tasks: List[Task], config: ConversionConfig) -> Iterator[VideoResult]:
    """Each task's result in task order; `config` has the flow backend resolved."""
    convert = functools.partial(_convert_task, config=config)
    if not tasks:  # a finished conversion, rerun
      return iter(())
    if self._pool is None and config.flow.backend != 'tf' and (self.num_workers == 1 or len(tasks) == 1):
      flow_choice.set_worker_threads(self.threads)
      return map(convert, tasks)
    return self.pool(len(tasks)).imap(convert, tasks, chunksize=1)

  def __enter__(self) -> 'Workers':
    return self

  def __exit__(self, *exception) -> None:
    if self._pool is not None:
      self._pool.terminate()


def _file_fingerprint(path: str) -> Dict[str, object]:
  """The byte size and SHA-256 of a file: what a completion marker records, and a rerun checks again."""
  digest = hashlib.sha256()
  size = 0
  with tf.io.gfile.GFile(path, 'rb') as f:
    while chunk := f.read(_READ_CHUNK_BYTES):
      digest.update(chunk)
      size += len(chunk)
  return {'bytes': size, 'sha256': digest.hexdigest()}


def _mismatch(shard_path: str, marker: dict) -> str:
  """How a finished shard differs from its completion marker; '' when its size and SHA-256 still match."""
  if 'sha256' not in marker:
    return 'its completion marker has no checksum (an older converter wrote it)'
  actual = _file_fingerprint(shard_path)
  if actual['bytes'] != marker['bytes']:
    return f'it has {actual["bytes"]} bytes, but had {marker["bytes"]} when it was finished'
  if actual['sha256'] != marker['sha256']:
    return 'its contents changed after it was finished (SHA-256 differs)'
  return ''


def _shard_is_complete(shard_path: str) -> bool:
  """Whether the shard was finished and is unchanged since; a finished shard that changed is logged by name."""
  marker_path = summary_path(shard_path)
  if not (tf.io.gfile.exists(shard_path) and tf.io.gfile.exists(marker_path)):
    return False
  try:
    problem = _mismatch(shard_path, json_files.read_json(marker_path))
  except ValueError:
    problem = f'its completion marker {marker_path} is unreadable'
  if problem:
    logging.warning('%s: %s; rewriting it', shard_path, problem)
  return not problem


def _write_shard(shard_path: str, num_videos: int, results: Iterator[VideoResult],
                 on_result: Callable[[VideoResult], None]) -> None:
  """Writes the next `num_videos` results as the shard, with the completion marker that makes it checkable.

  Raises:
    OutputWriteError: the shard or its marker could not be written (e.g. a full disk); neither is left behind.
  """
  marker = {'videos_written': 0, 'frames_written': 0, 'failures': []}  # videos_written: the shard's record count
  try:
    with json_files.written_atomically(shard_path) as temporary:
      with tf.io.TFRecordWriter(temporary) as writer:
        for result in itertools.islice(results, num_videos):
          if result.record is None:
            marker['failures'].append(result.failure())
          else:
            writer.write(result.record)
            marker['videos_written'] += 1
            marker['frames_written'] += result.num_frames
          on_result(result)
      marker.update(_file_fingerprint(temporary))
      json_files.write_json(summary_path(shard_path), marker)
  except (OSError, tf.errors.OpError) as error:
    raise OutputWriteError(f'{shard_path}: cannot be written ({cli.error_reason(error)})') from error


def run_local(config: ConversionConfig) -> dict:
  """Converts every video of `config` with a local process pool, resuming a previous run; returns the report.

  Raises:
    manifests.ManifestError, ConversionError: the job cannot start, or a shard cannot be written.
  """
  started = time.monotonic()
  num_workers = resolve_num_workers(config.num_workers)
  threads = threads_per_worker(num_workers)
  with output_folder_lock(config.output_dir), Workers(config, num_workers, threads) as workers:
    job = prepare_job(config, workers)
    config = job.config
    _remove_stale_temporaries(config.output_dir)
    paths = shard_paths(config.output_dir, config.name, config.num_shards)
    shards = assign_shards(job.tasks, config.num_shards)
    pending = [i for i, path in enumerate(paths) if not _shard_is_complete(path)]
    pending_tasks = [task for i in pending for task in shards[i]]
    logging.info('%s: %d videos in %d shards; %d shards done before, %d videos to convert with %d workers',
                 config.name, len(job.tasks), len(paths), len(paths) - len(pending), len(pending_tasks), num_workers)

    frames_this_run = 0
    results = workers.results(pending_tasks, config)
    with tqdm.tqdm(
        total=len(pending_tasks), unit='video', desc=config.name, disable=None) as progress:

      def on_result(result: VideoResult) -> None:
        nonlocal frames_this_run
        frames_this_run += result.num_frames
        progress.update(1)
        progress.set_postfix_str(f'{frames_this_run / (time.monotonic() - started):.1f} frames/s')

      for i in pending:
        _write_shard(paths[i], len(shards[i]), results, on_result)

    summaries = [json_files.read_json(summary_path(path)) for path in paths]
  return build_report(
      job, 'local',
      videos_written=sum(s['videos_written'] for s in summaries),
      frames_written=sum(s['frames_written'] for s in summaries),
      failures=job.missing + [f for s in summaries for f in s['failures']],
      seconds=time.monotonic() - started, frames_this_run=frames_this_run)
