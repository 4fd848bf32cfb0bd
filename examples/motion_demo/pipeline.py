"""The demo's ten steps, each logged and each skipped when its output is already complete, so that an interrupted
demo resumes; a changed setting is refused rather than mixed with an earlier run's outputs."""

import contextlib
import dataclasses
import json
import logging as python_logging
import os
import time
from typing import Dict, Sequence

from absl import logging
import keras

from d3d_core import json_files
from d3d_core import label_map
from d3d_core import own_process
from examples.motion_demo import config as demo_config
from examples.motion_demo import latency
from examples.motion_demo import report
from official_d3d import benchmarking
from official_d3d import callbacks
from official_d3d import export_saved_model
from official_d3d import motion_probe
from official_d3d import train_lib
from official_d3d.configs import d3d_config
from tfrecord_tools import convert_lib
from tfrecord_tools import make_motion_dataset

RESULTS_FILENAME = 'results.json'
SUMMARY_FILENAME = 'summary.json'
LATENCY_FILENAME = 'latency.json'
LOG_PATH = os.path.join('logs', 'demo.log')  # under the output folder
NUM_STEPS = 10


def log_step(number: int, text: str) -> None:
  logging.info('[demo %d/%d] %s', number, NUM_STEPS, text)
  print(f'[demo {number}/{NUM_STEPS}] {text}', flush=True)


@contextlib.contextmanager
def logging_to_file(path: str):
  """Every log line (absl's, TensorFlow's, Keras's, Python warnings), from INFO up, into `path` instead of the
  console, which keeps the demo's own lines and progress; appended to, so a resumed demo's log follows the first's.

  The verbosity goes through absl, which resets the absl logger's level to it whenever its flags are parsed again.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  root, tf_logger = python_logging.getLogger(), python_logging.getLogger('tensorflow')
  saved = root.handlers[:], tf_logger.handlers[:], root.level, logging.get_verbosity()
  handler = python_logging.FileHandler(path)
  handler.setFormatter(logging.PythonFormatter())
  root.handlers[:], tf_logger.handlers[:] = [handler], []
  logging.set_verbosity(max(saved[3], logging.INFO))
  root.setLevel(min(root.level, python_logging.INFO))
  python_logging.captureWarnings(True)
  try:
    yield
  finally:
    python_logging.captureWarnings(False)
    root.handlers[:], tf_logger.handlers[:], level, verbosity = saved
    logging.set_verbosity(verbosity)
    root.setLevel(level)
    handler.close()


def _as_json(value):
  """The value as it reads back from a JSON file (tuples become lists), for comparisons with saved settings."""
  return json.loads(json.dumps(value))


def generate_videos(config: demo_config.DemoConfig, paths: demo_config.DemoPaths) -> None:
  """Step 1. The dataset's config file is written last, so its presence marks a complete dataset."""
  dataset = config.dataset
  saved_path = os.path.join(paths.videos, make_motion_dataset.CONFIG_FILENAME)
  if os.path.exists(saved_path):
    if json_files.read_json(saved_path)['config'] != _as_json(dataclasses.asdict(dataset)):
      raise d3d_config.ConfigError(
          f'{saved_path} describes another dataset than this demo\'s settings: use another '
          '--output_dir, or delete that one')
    log_step(1, f'Motion dataset already in {paths.videos}: skipped')
  else:
    total = sum(dataset.videos_per_class(split) for split in make_motion_dataset.SPLITS) * len(dataset.classes)
    log_step(1, f'Generating {total} videos of {len(dataset.classes)} classes in {paths.videos}')
    make_motion_dataset.generate_dataset(dataset, paths.videos)
  if config.validation_videos_per_class:
    demo_config.write_validation_manifests(config, paths)


def convert_records(config: demo_config.DemoConfig, paths: demo_config.DemoPaths) -> Dict[str, dict]:
  """Step 2. The converter resumes by itself; a split whose report exists is complete."""
  reports = {}
  for split in make_motion_dataset.SPLITS:
    conversion = demo_config.conversion_config(config, paths, split)
    report_path = convert_lib.report_path(paths.records, split)
    if os.path.exists(report_path):
      log_step(2, f'{split} records already in {paths.records}: skipped')
      reports[split] = json_files.read_json(report_path)
      continue
    workers = convert_lib.resolve_num_workers(conversion.num_workers)
    log_step(2, f'Converting the {split} videos to TFRecords with TV-L1 flow ({workers} worker{"s" * (workers > 1)})')
    conversion_report = convert_lib.run_local(conversion)
    if conversion_report['videos_failed']:
      raise RuntimeError(f'{conversion_report["videos_failed"]} {split} videos failed to convert: see {report_path}')
    convert_lib.write_report(conversion, conversion_report)
    reports[split] = conversion_report
  return reports


def train_network(config: demo_config.DemoConfig, paths: demo_config.DemoPaths, name: str, number: int) -> dict:
  """Steps 3-5: trains one network and evaluates it on the test split; returns its evaluation metrics."""
  experiment = demo_config.experiment_config(config, paths, name)
  # A recipe changed since an earlier run in this output_dir is refused, not answered with that run's results.
  train_lib.check_saved_config(train_lib.resolve_config(experiment))
  metrics_path = os.path.join(experiment.model_dir, train_lib.EVAL_METRICS_FILENAME)
  if os.path.exists(metrics_path) and json_files.read_json(metrics_path).get('step') == experiment.train.train_steps:
    log_step(number, f'{name} already trained and evaluated in {experiment.model_dir}: skipped')
    return json_files.read_json(metrics_path)
  distillation = experiment.distillation
  what = {'flow': 'the flow teacher (TV-L1 flow in)', 'rgb': 'the RGB baseline (RGB in, no teacher)',
          'd3d': f'the D3D student (RGB in, distilled from the flow teacher\'s {distillation.target}, '
                 f'{distillation.loss}, weight {distillation.weight:g})'}[experiment.stream]
  log_step(number, f'Training {what} for {experiment.train.train_steps} steps in {experiment.model_dir}')
  os.makedirs(experiment.model_dir, exist_ok=True)
  # The previous network's functions and graphs would stay alive in this process: a fresh Keras state per network.
  keras.backend.clear_session()
  keras.utils.set_random_seed(config.seed)
  return train_lib.run_experiment(experiment, 'train_and_eval')['eval']


def evaluate_fusion(config: demo_config.DemoConfig, paths: demo_config.DemoPaths) -> dict:
  """Step 6: two-stream late fusion of the flow teacher and the RGB baseline (equal weights)."""
  path = paths.join('models', train_lib.TWO_STREAM_METRICS_FILENAME)
  if os.path.exists(path):
    log_step(6, f'Two-stream evaluation already in {path}: skipped')
    return json_files.read_json(path)
  log_step(6, 'Evaluating two-stream late fusion (flow teacher + RGB baseline) on the test split')
  data = demo_config.experiment_config(config, paths, 'rgb_baseline').data
  return train_lib.evaluate_two_stream(paths.model_dir('rgb_baseline'), paths.model_dir('flow_teacher'), data,
                                       output_path=path)


def export_models(paths: demo_config.DemoPaths) -> Dict[str, str]:
  """Step 7: the student as a SavedModel, and the two-stream networks, exported the same way to time them fairly."""
  exported = {}
  for name in demo_config.NETWORKS:
    version = paths.export_version(name)
    if os.path.exists(os.path.join(version, 'saved_model.pb')):
      log_step(7, f'{name} SavedModel already in {version}: skipped')
    else:
      log_step(7, f'Exporting {name} as a SavedModel to {version}')
      export_saved_model.export(paths.model_dir(name), paths.export_base(name), version=1)
    exported[name] = version
  return exported


def time_inference(config: demo_config.DemoConfig, paths: demo_config.DemoPaths, exported: Dict[str, str]) -> dict:
  """Step 8: per-clip latency of the D3D SavedModel and of the two-stream pipeline (`latency.measure_latency`)."""
  path = paths.join(LATENCY_FILENAME)
  if os.path.exists(path):
    log_step(8, f'Latency already measured in {path}: skipped')
    return json_files.read_json(path)
  log_step(8, f'Timing {config.latency_clips} test clips through the D3D SavedModel and the two-stream pipeline')
  measured = latency.measure_latency(config, paths, exported)
  json_files.write_json(path, measured)
  return measured


def probe_motion(paths: demo_config.DemoPaths) -> dict:
  """Step 9: the paper's motion probe: how well each network's features predict the test clips' TV-L1 flow."""
  path = paths.join('probe', motion_probe.RESULTS_FILENAME)
  if os.path.exists(path):
    log_step(9, f'Motion probe already in {path}: skipped')
    return json_files.read_json(path)
  log_step(9, 'Probing how much motion each network\'s features hold (linear readouts of the TV-L1 flow)')
  config = motion_probe.ProbeConfig(networks=tuple(paths.model_dir(name) for name in demo_config.NETWORKS),
                                    names=demo_config.NETWORKS, output_dir=paths.join('probe'))
  return motion_probe.run(config)


def run_demo(config: demo_config.DemoConfig) -> dict:
  """Runs (or resumes) the whole demo in `config.output_dir`, its log lines in `<output_dir>/logs/demo.log`; prints
  its steps, the table and the paths, and returns the results."""
  paths = demo_config.DemoPaths.of(config)
  demo_config.check(config, paths)  # settings that train.py would refuse fail now, not after hours of work
  os.makedirs(paths.root, exist_ok=True)
  with logging_to_file(paths.join(LOG_PATH)):
    return _run_steps(config, paths)


def _run_steps(config: demo_config.DemoConfig, paths: demo_config.DemoPaths) -> dict:
  """`run_demo` once its settings are checked."""
  started = time.monotonic()
  generate_videos(config, paths)
  reports = convert_records(config, paths)
  metrics = {name: train_network(config, paths, name, number)
             for number, name in enumerate(demo_config.NETWORKS, start=3)}
  metrics['two_stream'] = evaluate_fusion(config, paths)['two_stream']
  exported = export_models(paths)
  timings = time_inference(config, paths, exported)
  probe = probe_motion(paths)

  log_step(10, 'Results')
  class_names = label_map.read_label_map(paths.label_map)
  factors = {name: report.factor_accuracy(metrics[name]['confusion'], class_names) for name in report.ACCURACY_NAMES}
  results = {
      'seed': config.seed,
      'machine': benchmarking.machine_description(),
      'config': {'demo': _as_json(dataclasses.asdict(config)),
                 **{name: d3d_config.to_dict(demo_config.experiment_config(config, paths, name))
                    for name in demo_config.NETWORKS}},
      **{metric: {name: metrics[name][metric] for name in report.ACCURACY_NAMES}
         for metric in ('top_1', 'top_5', 'mean_class_accuracy', 'per_class_accuracy', 'confusion')},
      'class_names': class_names,
      'evaluation_split': 'validation' if config.validation_videos_per_class else 'test',
      'factor_accuracy': factors if all(factors.values()) else {},  # on classes of a kind and a motion
      'chance': 1.0 / len(class_names),
      'num_test_videos': reports['test']['videos_written'],
      'num_train_videos': reports['train']['videos_written'],
      'latency': timings,
      'motion_probe': {key: probe[key]
                       for key in ('endpoints', 'trivial', 'networks', 'num_clips', 'num_videos', 'num_folds')},
      'paths': {
          'videos': paths.videos,
          'train_records': paths.record_pattern('train'),
          'test_records': paths.record_pattern('test'),
          'label_map': paths.label_map,
          **{f'{name}_model_dir': paths.model_dir(name) for name in demo_config.NETWORKS},
          'd3d_saved_model': exported['d3d_student'],
          'motion_probe_plot': paths.join('probe', motion_probe.PLOT_FILENAME),
          'results': paths.join(RESULTS_FILENAME),
          'log': paths.join(LOG_PATH),
      },
  }
  histories = {name: callbacks.read_history(os.path.join(paths.model_dir(name), callbacks.HISTORY_FILENAME))
               for name in demo_config.NETWORKS}
  results['paths'].update(report.plot_results(results, histories, paths.root),
                          confusion_plot=report.plot_confusion(results, paths.root))
  results['seconds_this_run'] = round(time.monotonic() - started, 1)
  json_files.write_json(paths.join(RESULTS_FILENAME), results)
  print('\n' + report.format_table(results) + '\n')
  print('Outputs:')
  for name, path in results['paths'].items():
    print(f'  {name:<24} {path}')
  print('Next:')
  for command in report.next_commands(config.dataset, paths):
    print(f'  {command}')
  return results


def seed_config(config: demo_config.DemoConfig, seed: int, several: bool) -> demo_config.DemoConfig:
  """One seed's demo: in `output_dir` itself, or among several in `<output_dir>/seed_<N>`, on the videos and records
  of `output_dir` (or `data_dir`), made once for all of them."""
  if not several:
    return dataclasses.replace(config, seed=seed)
  return dataclasses.replace(config, seed=seed, output_dir=os.path.join(config.output_dir, f'seed_{seed}'),
                             data_dir=config.data_dir or config.output_dir)


def run_seeds(config: demo_config.DemoConfig, seeds: Sequence[int]) -> dict:
  """One demo per seed (`seed_config`), the networks of each trained anew on one data set; several get a summary.
  Of several, each seed runs in a process of its own, which gives its memory back when it ends."""
  if len(seeds) == 1:
    return run_demo(seed_config(config, seeds[0], several=False))
  results = [own_process.call(run_demo, seed_config(config, seed, several=True)) for seed in seeds]
  summary = report.summarize(results)
  path = os.path.join(config.output_dir, SUMMARY_FILENAME)
  json_files.write_json(path, summary)
  print('\n' + report.format_summary(summary))
  print(f'Summary: {path}')
  return summary

