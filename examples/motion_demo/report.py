"""What the demo shows: the table of accuracies and latencies, its plots, the commands to go on from, and the mean and
spread over seeds."""

import os
import statistics
from typing import Dict, List, Sequence

import numpy as np

from examples.motion_demo import config as demo_config
from official_d3d import motion_probe
from tfrecord_tools import make_motion_dataset

ACCURACY_NAMES = (*demo_config.NETWORKS, 'two_stream')
CURVES_FILENAME = 'training_curves.png'
ACCURACY_PLOT_FILENAME = 'accuracy.png'
CONFUSION_PLOT_FILENAME = 'confusion.png'
COLOURS = {'flow_teacher': 'tab:blue', 'rgb_baseline': 'tab:orange', 'd3d_student': 'tab:green',
           'two_stream': 'tab:purple'}


def factor_accuracy(confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> Dict[str, float]:
  """On classes of a kind and a motion (`<kind>_<motion>`): the share of videos whose top-1 class has the right kind,
  and the right motion, whatever the other half; {} for other class sets. What each stream can tell apart."""
  parts = [make_motion_dataset.parse_class(name) for name in class_names]
  if not all(kind for kind, _ in parts):
    return {}
  confusion = np.asarray(confusion)
  return {factor: float(sum(confusion[i, j] for i, j in np.ndindex(*confusion.shape) if parts[i][f] == parts[j][f])
                        / confusion.sum())
          for f, factor in enumerate(('kind', 'motion'))}


def gap_closed(top_1: Dict[str, float]) -> float:
  """(student - baseline) / (two-stream - baseline): the share of the RGB baseline's gap to two-stream that
  distillation closes (the paper's Kinetics-400 figures give 0.48); NaN without a gap."""
  gap = top_1['two_stream'] - top_1['rgb_baseline']
  return (top_1['d3d_student'] - top_1['rgb_baseline']) / gap if gap > 0 else float('nan')


def format_table(results: dict) -> str:
  """Top-1 per model (with the kind and motion accuracies on complementary classes), the gap closed, and per-clip
  latency of D3D against two-stream."""
  top_1, latency, factors = results['top_1'], results['latency'], results['factor_accuracy']
  inference = {'flow_teacher': 'TV-L1 flow + flow net', 'rgb_baseline': 'RGB', 'd3d_student': 'RGB only',
               'two_stream': 'RGB + TV-L1 flow + both nets'}
  factor_header = f' {"kind":>6} {"motion":>6}' if factors else ''
  def factor_cells(name):
    return f' {factors[name]["kind"]:>6.3f} {factors[name]["motion"]:>6.3f}' if factors else ''
  split = results['evaluation_split']
  rows = [f'{"model":<14} {split[:4] + " top-1":>10}{factor_header}   inference input',
          *(f'{name:<14} {top_1[name]:>10.3f}{factor_cells(name)}   {inference[name]}' for name in ACCURACY_NAMES),
          f'(chance: {results["chance"]:.3f}, {results["num_test_videos"]} {split} videos'
          + ('; kind, motion: top-1 class of the right kind, of the right motion)' if factors else ')'),
          f'gap closed by distillation, (D3D - RGB) / (two-stream - RGB): {gap_closed(top_1):.2f}',
          '',
          f'{"latency per clip":<28} {"ms":>9}',
          f'{"D3D SavedModel":<28} {latency["d3d_ms_per_clip"]:>9.1f}',
          f'{"two-stream (incl. TV-L1)":<28} {latency["two_stream_ms_per_clip"]:>9.1f}',
          f'{"  of which TV-L1 flow":<28} {latency["tvl1_flow_ms_per_clip"]:>9.1f}',
          f'two-stream / D3D: {latency["two_stream_over_d3d"]:.1f}x '
          f'({latency["frames_per_clip"]} frames at stride {latency["stride"]}, '
          f'{latency["frame_size"][0]}x{latency["frame_size"][1]}, '
          f'{latency["cpu_cores"]} CPU cores{", GPU" if latency["gpu"] else ""})',
          '',
          'motion probe: test end-point error of flow read linearly from each endpoint (px; lower holds more motion)',
          motion_probe.summary(results['motion_probe']),
          'RGB - D3D, paired over the test videos (mean +- standard error; positive: the student holds more motion):',
          '  ' + ', '.join(f'{endpoint} {gap["mean"]:+.3f} +- {gap["stderr"]:.3f}'
                           for endpoint, gap in _probe_gain(results).items())]
  return '\n'.join(rows)


def plot_results(results: dict, histories: Dict[str, List[dict]], output_dir: str) -> Dict[str, str]:
  """training_curves.png (cross-entropy and top-1 of the three networks) and accuracy.png (test top-1 bars) in
  `output_dir`; returns their paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  figure, (loss_axes, accuracy_axes) = pyplot.subplots(1, 2, figsize=(11, 4))
  for name, history in histories.items():
    steps = [entry['step'] for entry in history]
    loss_axes.plot(steps, [entry['cls_loss'] for entry in history], color=COLOURS[name], label=name)
    accuracy_axes.plot(steps, [entry['top_1'] for entry in history], color=COLOURS[name], label=f'{name} (train)')
    evaluated = [entry for entry in history if 'val_top_1' in entry]
    if evaluated:
      accuracy_axes.plot([entry['step'] for entry in evaluated], [entry['val_top_1'] for entry in evaluated],
                         color=COLOURS[name], linestyle='--', marker='o', label=f'{name} (test)')
  loss_axes.set(xlabel='training step', ylabel='cross-entropy (train)', title='Loss')
  accuracy_axes.set(xlabel='training step', ylabel='top-1', ylim=(0, 1.02), title='Accuracy')
  loss_axes.legend()
  accuracy_axes.legend(fontsize='small')
  figure.tight_layout()
  curves_path = os.path.join(output_dir, CURVES_FILENAME)
  figure.savefig(curves_path, dpi=100)
  pyplot.close(figure)

  figure, axes = pyplot.subplots(figsize=(6, 4))
  values = [results['top_1'][name] for name in ACCURACY_NAMES]
  bars = axes.bar(ACCURACY_NAMES, values, color=[COLOURS[name] for name in ACCURACY_NAMES])
  axes.bar_label(bars, fmt='%.2f')
  axes.axhline(results['chance'], color='gray', linestyle=':', label='chance')
  axes.set(ylabel='test top-1', ylim=(0, 1.05), title=f'Motion benchmark, seed {results["seed"]}')
  axes.legend()
  figure.tight_layout()
  accuracy_path = os.path.join(output_dir, ACCURACY_PLOT_FILENAME)
  figure.savefig(accuracy_path, dpi=100)
  pyplot.close(figure)
  return {'training_curves': curves_path, 'accuracy_plot': accuracy_path}


def plot_confusion(results: dict, output_dir: str) -> str:
  """confusion.png: each model's confusion matrix over the test videos, rows normalised (true class -> predicted)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  names = results['class_names']
  figure, all_axes = pyplot.subplots(1, len(ACCURACY_NAMES), figsize=(4.2 * len(ACCURACY_NAMES), 4.6))
  for axes, name in zip(all_axes, ACCURACY_NAMES):
    confusion = np.asarray(results['confusion'][name], np.float64)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    axes.imshow(rates, vmin=0, vmax=1, cmap='Blues')
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    axes.set_yticks(range(len(names)), names if axes is all_axes[0] else [], fontsize=6)
    axes.set(title=f'{name} ({results["top_1"][name]:.2f})', xlabel='predicted')
  all_axes[0].set_ylabel('true class')
  figure.tight_layout()
  path = os.path.join(output_dir, CONFUSION_PLOT_FILENAME)
  figure.savefig(path, dpi=100)
  pyplot.close(figure)
  return path


def next_commands(dataset: make_motion_dataset.MotionDatasetConfig, paths: demo_config.DemoPaths) -> List[str]:
  """What a user can run next on the demo's outputs."""
  first_class = dataset.classes[0]
  video = os.path.join(paths.videos, 'test', first_class, f'{first_class}_000{dataset.extension}')
  return [
      f'python -m tfrecord_tools.inspect_records --records={paths.record_pattern("test")} '
      f'--output_dir={paths.join("inspect")}',
      f'tensorboard --logdir={paths.join("models")}',
      f'python -m official_d3d.serving.client --video={video} --saved_model={paths.export_version("d3d_student")} '
      '--num_frames=0 --short_side=0',
      f'saved_model_cli show --dir={paths.export_version("d3d_student")} --all',
      f'tensorflow_model_server --rest_api_port=8501 --model_name=d3d '
      f'--model_base_path={os.path.abspath(paths.export_base("d3d_student"))}',
  ]


def _spread(values: Sequence[float]) -> dict:
  """Mean and sample std of the values that are numbers (a seed whose baseline matched two-stream has no gap
  closed), and every value."""
  numbers = [v for v in values if not np.isnan(v)]
  return {'mean': round(statistics.mean(numbers), 4) if numbers else float('nan'),
          'std': round(statistics.stdev(numbers), 4) if len(numbers) > 1 else 0.0,
          'values': [round(v, 4) for v in values]}


def _probe_gain(results: dict) -> Dict[str, dict]:
  """The paper's claim at each endpoint: the student's features predict flow better (a positive difference)."""
  return motion_probe.paired_difference(results['motion_probe'], 'rgb_baseline', 'd3d_student')


def summarize(results: Sequence[dict]) -> dict:
  """Mean and sample standard deviation over seeds of each top-1, latency and paired motion-probe difference."""
  latency_keys = ('d3d_ms_per_clip', 'two_stream_ms_per_clip', 'two_stream_over_d3d')
  probe_gains = [_probe_gain(r) for r in results]
  return {'seeds': [r['seed'] for r in results],
          'top_1': {name: _spread([r['top_1'][name] for r in results]) for name in ACCURACY_NAMES},
          # Per seed the student and the baseline start from the same weights and see the same clips: the
          # difference is what distillation did in that run.
          'student_gain': _spread([r['top_1']['d3d_student'] - r['top_1']['rgb_baseline'] for r in results]),
          'gap_closed': _spread([gap_closed(r['top_1']) for r in results]),
          'factor_accuracy': {name: {factor: _spread([r['factor_accuracy'][name][factor] for r in results])
                                     for factor in factors}
                              for name, factors in results[0]['factor_accuracy'].items()},
          'probe_gain': {endpoint: {**_spread([gains[endpoint]['mean'] for gains in probe_gains]),
                                    'stderr': [round(gains[endpoint]['stderr'], 4) for gains in probe_gains]}
                         for endpoint in results[0]['motion_probe']['endpoints']},
          'latency': {key: _spread([r['latency'][key] for r in results]) for key in latency_keys}}


def format_summary(summary: dict) -> str:
  rows = [f'{"model":<14} {"test top-1 (mean +- std over seeds " + ",".join(map(str, summary["seeds"])) + ")"}']
  rows += [f'{name:<14} {s["mean"]:.3f} +- {s["std"]:.3f}   {s["values"]}'
           for name, s in summary['top_1'].items()]
  gain = summary['student_gain']
  rows.append(f'{"D3D - RGB":<14} {gain["mean"]:+.3f} +- {gain["std"]:.3f}   {gain["values"]}  (same seed, paired; '
              f'standard error of the mean {gain["std"] / len(gain["values"])**0.5:.3f})')
  closed = summary['gap_closed']
  rows.append(f'{"gap closed":<14} {closed["mean"]:.2f} +- {closed["std"]:.2f}   {closed["values"]}  '
              '((D3D - RGB) / (two-stream - RGB))')
  for name, factors in summary['factor_accuracy'].items():
    rows.append(f'{name:<14} ' + ', '.join(f'{factor} {s["mean"]:.3f} +- {s["std"]:.3f}'
                                          for factor, s in factors.items()))
  rows += [f'{key:<24} {s["mean"]:.2f} +- {s["std"]:.2f}' for key, s in summary['latency'].items()]
  rows.append('motion probe, RGB - D3D test end-point error (px; positive: the student holds more motion), mean +- '
              'std over seeds, then each seed\'s value and its standard error over the test videos:')
  rows += [f'  {endpoint:<22} {s["mean"]:+.3f} +- {s["std"]:.3f}   '
           + ', '.join(f'{value:+.3f} ({stderr:.3f})' for value, stderr in zip(s['values'], s['stderr']))
           for endpoint, s in summary['probe_gain'].items()]
  return '\n'.join(rows)
