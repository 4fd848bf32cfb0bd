"""The motion probe of the D3D paper: how well a frozen network's features predict the optical flow of its own clip.

For each endpoint, a linear readout (a 1x1x1 convolution to the flow's 2 channels, upsampled linearly to the flow's
frames and pixels) is fitted by least squares to the stored TV-L1 flow of clips the network sees; its end-point error
(EPE: the mean length of the error vector, in pixels of the network's input) says how much motion that layer holds in
a linearly readable form. Two trivial predictors set the scale: zero flow, and the mean flow vector (what a readout of
features without motion still learns, in its bias). The paper's claim: a D3D student's features predict flow better
than its RGB baseline's.

Readouts are fitted and measured on videos the networks did not train on (their evaluation records), by k-fold
cross-fitting: each fold's videos are predicted by a readout fitted on the other folds'. Fitted on the training videos
instead, a readout also uses what a network memorised of them: in the demo (seed 0), an RGB baseline's Mixed_5c
readout fitted on its training videos predicted their flow at 0.76 px and unseen videos' at 0.93, worse than the
mean flow (0.84).

Every network is probed on the same clips (the first network's clip settings: frames, stride, crop, resize), each
view of a video a clip of its own. The clips are decoded once (once per RGB scaling among the networks) and kept in
memory for the passes over them, so at full size limit the videos (`max_videos`).
"""

import copy
import dataclasses
import os
from typing import Dict, List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
import tqdm

from d3d_core import json_files
from d3d_core import schema
from official_d3d.configs import d3d_config
from official_d3d.dataloaders import video_input
from official_d3d.modeling import factory

DEFAULT_ENDPOINTS = ('Conv2d_2c_3x3', 'Mixed_3c', 'Mixed_4f', 'Mixed_5c')
RESULTS_FILENAME = 'motion_probe.json'
PLOT_FILENAME = 'motion_probe.png'
TRIVIAL_PREDICTORS = ('zero_flow', 'mean_flow')
# Ridge penalties tried for each readout, relative to its features' mean square: up to where a readout is little
# more than its bias, the mean flow (features without motion choose those).
PENALTIES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


@dataclasses.dataclass
class ProbeConfig:
  """What is probed, on which records, and how the readouts are cross-fitted; empty `records`: the first network's
  evaluation records."""
  networks: Tuple[str, ...] = ()
  names: Tuple[str, ...] = ()
  endpoints: Tuple[str, ...] = DEFAULT_ENDPOINTS
  records: str = ''
  num_clips: int = 2
  num_folds: int = 4
  max_videos: int = 0
  batch_size: int = 8
  output_dir: str = ''


def interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
  """float64 `[out_size, in_size]`: `tf.image.resize`'s bilinear interpolation along one axis, as a matrix."""
  identity = tf.eye(in_size, dtype=tf.float32)[:, tf.newaxis, :]  # in_size positions of a 1-pixel-wide image
  return tf.image.resize(identity, [out_size, 1], method='bilinear')[:, 0, :].numpy().astype(np.float64)


def _along(matrices: Sequence[np.ndarray], maps: np.ndarray) -> np.ndarray:
  """`maps` `[B, t, h, w, K]` with each of (t, h, w) mapped by one matrix `[new, old]`."""
  for axis, matrix in enumerate(matrices, start=1):
    maps = np.moveaxis(np.tensordot(matrix, maps, axes=([1], [axis])), 0, axis)
  return maps


class LinearReadout:
  """The least-squares linear readout of flow from one endpoint: flow = upsample(features @ W + b), upsampling
  `tf.image.resize`'s bilinear in time, height and width.

  Upsampling is linear and acts on positions while W acts on channels, so the fit needs only the sums
  F^T (U^T U) F and F^T U^T Y over the clips (U: the separable upsampling, Y: the flow): solved exactly, with a ridge
  penalty, without learning rates or epochs to tune; the sums of several sets of clips add up (`merged`).
  """

  def __init__(self, feature_shape: Sequence[int], clip_shape: Sequence[int]):
    self.up = [interpolation_matrix(n, m) for n, m in zip(feature_shape, clip_shape)]
    self.gram_up = [u.T @ u for u in self.up]
    self.gram = 0.0
    self.cross = 0.0

  @staticmethod
  def _with_bias(features: np.ndarray) -> np.ndarray:
    return np.concatenate([features, np.ones(features.shape[:-1] + (1,))], axis=-1)

  def accumulate(self, features: np.ndarray, flow: np.ndarray) -> None:
    """Adds clips: features `[B, t, h, w, C]`, flow `[B, T, H, W, 2]`."""
    features = self._with_bias(features.astype(np.float64))
    self.gram = self.gram + np.einsum('bthwc,bthwd->cd', features, _along(self.gram_up, features))
    self.cross = self.cross + np.einsum('bthwc,bthwk->ck', features,
                                        _along([u.T for u in self.up], flow.astype(np.float64)))

  @staticmethod
  def merged(readouts: Sequence['LinearReadout']) -> 'LinearReadout':
    """The readout of the clips of all `readouts` (of one endpoint)."""
    combined = copy.copy(readouts[0])
    combined.gram = sum(readout.gram for readout in readouts)
    combined.cross = sum(readout.cross for readout in readouts)
    return combined

  def solve(self, penalty: float) -> np.ndarray:
    """W `[C + 1, 2]` (bias last) minimising the squared error + penalty x s x |W without bias|^2, s the features'
    mean square (so that a penalty means the same at any feature scale)."""
    scale = np.trace(self.gram[:-1, :-1]) / (len(self.gram) - 1)
    ridge = penalty * scale * np.diag(np.r_[np.ones(len(self.gram) - 1), 0.0])
    return np.linalg.solve(self.gram + ridge, self.cross)

  def predict(self, features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return _along(self.up, self._with_bias(features.astype(np.float64)) @ weights)


def end_point_errors(predicted, target, bound: float) -> np.ndarray:
  """EPE in pixels at each pixel, from flows `[..., 2]` in units of `bound` (the pipeline's [-1, 1])."""
  return np.linalg.norm(np.asarray(predicted, np.float64) - np.asarray(target, np.float64), axis=-1) * bound


def flow_bound(pattern: str) -> float:
  """The pixels that flow value 1 stands for in the records (their `FORWARD_FLOW/bound`, else the default)."""
  for path in video_input.glob_files(pattern):
    first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    if first is not None:
      context = tf.train.SequenceExample.FromString(first.numpy()).context.feature
      bound = context[schema.FLOW_BOUND].float_list.value if schema.FLOW_BOUND in context else []
      return float(bound[0]) if bound else schema.DEFAULT_FLOW_BOUND
  raise video_input.RecordError(f'no records in {pattern}')


def clips(data_config: d3d_config.DataConfig, pattern: str, pixel_range: str, max_videos: int = 0) -> tf.data.Dataset:
  """{'rgb', 'flow'} `[T, S, S, C]` per view of each video of `pattern` (labels dropped), decoded once and cached."""
  data_config = dataclasses.replace(data_config, eval_pattern=pattern, eval_batch_size=1)
  dataset = video_input.build_eval_dataset(data_config, ('rgb', 'flow'), pixel_range=pixel_range)
  if max_videos:
    dataset = dataset.take(max_videos)
  return dataset.map(lambda features, labels: features).unbatch().unbatch().cache()  # batches, then views


def video_folds(num_videos: int, num_folds: int) -> np.ndarray:
  """The fold of each video: a fixed shuffle dealt out in turn, so that folds mix classes whatever the order of the
  records."""
  return np.random.default_rng(0).permutation(num_videos) % num_folds


class ProbeClips:
  """The probe's clips, decoded once for each RGB scaling (`pixel_range`) among the networks (the first full pass
  fills an in-memory cache, later passes read it), and the cross-fitting fold of each clip."""

  def __init__(self, config: ProbeConfig, data_config: d3d_config.DataConfig, pixel_range: str):
    self.config = config
    self.data_config = data_config
    self.bound = flow_bound(config.records)
    self._clips: Dict[str, tf.data.Dataset] = {}
    self.num_clips = int(self.get(pixel_range).reduce(0, lambda n, _: n + 1))
    self.num_videos = self.num_clips // data_config.num_eval_clips
    if self.num_videos < 2 * config.num_folds:
      raise d3d_config.ConfigError(f'{config.records} holds {self.num_videos} videos: cross-fitting over '
                                   f'{config.num_folds} folds needs at least {2 * config.num_folds}')
    self.folds = np.repeat(video_folds(self.num_videos, config.num_folds), data_config.num_eval_clips)

  def get(self, pixel_range: str) -> tf.data.Dataset:
    if pixel_range not in self._clips:
      self._clips[pixel_range] = clips(self.data_config, self.config.records, pixel_range, self.config.max_videos)
    return self._clips[pixel_range]


def trivial_errors(probe_clips: ProbeClips, pixel_range: str) -> Dict[str, float]:
  """EPE of predicting zero flow, and the mean flow vector of the other folds' clips, everywhere."""
  num_folds = probe_clips.config.num_folds
  sums, counts = np.zeros((num_folds, 2)), np.zeros(num_folds)
  for fold, features in zip(probe_clips.folds, probe_clips.get(pixel_range)):
    flow = features['flow'].numpy().reshape(-1, 2)
    sums[fold] += flow.sum(axis=0)
    counts[fold] += len(flow)
  means = [(sums.sum(axis=0) - sums[k]) / (counts.sum() - counts[k]) for k in range(num_folds)]
  errors = {name: [] for name in TRIVIAL_PREDICTORS}
  for fold, features in zip(probe_clips.folds, probe_clips.get(pixel_range)):
    target = features['flow'].numpy()
    errors['zero_flow'].append(end_point_errors(np.zeros_like(target), target, probe_clips.bound).mean())
    errors['mean_flow'].append(
        end_point_errors(np.broadcast_to(means[fold], target.shape), target, probe_clips.bound).mean())
  return {name: float(np.mean(values)) for name, values in errors.items()}


def _batches(dataset: tf.data.Dataset, forward, modality: str, batch_size: int, progress: tqdm.tqdm):
  """(index of the first clip, endpoint features `{name: [B, t, h, w, C]}`, flow `[B, T, H, W, 2]`) of each batch."""
  first = 0
  for features in dataset.batch(batch_size):
    outputs = forward(features[modality])
    progress.update(len(features['flow']))
    yield first, {name: value.numpy() for name, value in outputs.items()}, features['flow'].numpy()
    first += len(features['flow'])


def restore_networks(config: ProbeConfig) -> List[Tuple[keras.Model, d3d_config.ExperimentConfig]]:
  """(network, its config) of each of `config.networks`; each must have every endpoint probed."""
  restored = []
  for path in config.networks:
    network, network_config = factory.restore_network(path)
    unknown = [name for name in config.endpoints if name not in network.endpoint_names]
    if unknown:
      raise d3d_config.ConfigError(f'unknown endpoint {", ".join(unknown)}: {path} has {network.endpoint_names}')
    restored.append((network, network_config))
  return restored


def probe_network(network: keras.Model, network_config: d3d_config.ExperimentConfig, config: ProbeConfig,
                  data_config: d3d_config.DataConfig, probe_clips: ProbeClips, progress: tqdm.tqdm) -> Dict:
  """Cross-fitted least-squares readouts of a frozen network: {'epe': {endpoint: EPE, px}, 'epe_per_video':
  {endpoint: [EPE of each video]}, 'penalty': {endpoint: ridge}}.

  Each endpoint's ridge penalty is the one of `PENALTIES` with the smallest squared error over the folds, each fold
  predicted by the readout fitted on the others.
  """
  modality = factory.stream_modality(network_config.stream)
  dataset = probe_clips.get(network_config.model.pixel_range)
  clip_shape = (data_config.num_frames, data_config.crop_size, data_config.crop_size)
  # Traced once for every batch size (the last batch is smaller): a trace costs more than the tiny networks' passes.
  @tf.function(input_signature=[tf.TensorSpec((None,) + clip_shape + (network.input_channels,))])
  def forward(clips):
    outputs = network(clips, training=False)
    return {name: outputs[name] for name in config.endpoints}
  shapes = network.compute_output_shape((None,) + clip_shape + (network.input_channels,))

  folds = [{name: LinearReadout(shapes[name][1:4], clip_shape) for name in config.endpoints}
           for _ in range(config.num_folds)]
  for first, features, flow in _batches(dataset, forward, modality, config.batch_size, progress):
    batch_folds = probe_clips.folds[first:first + len(flow)]
    for fold in np.unique(batch_folds):
      for name, readout in folds[fold].items():
        readout.accumulate(features[name][batch_folds == fold], flow[batch_folds == fold])

  penalties, weights = {}, [{} for _ in folds]  # weights[k]: the readouts fitted without fold k
  for name in config.endpoints:
    others = [LinearReadout.merged([folds[j][name] for j in range(len(folds)) if j != k]) for k in range(len(folds))]
    penalties[name] = min(PENALTIES, key=lambda p: sum(_squared_error(others[k].solve(p), folds[k][name])
                                                       for k in range(len(folds))))
    for k, readout in enumerate(others):
      weights[k][name] = readout.solve(penalties[name])

  # A second forward pass rather than every clip's features kept: at the paper's size Conv2d_2c_3x3 alone holds
  # 32x56x56x192 values a clip.
  clip_errors = {name: np.zeros(probe_clips.num_clips) for name in config.endpoints}
  for first, features, flow in _batches(dataset, forward, modality, config.batch_size, progress):
    for offset, fold in enumerate(probe_clips.folds[first:first + len(flow)]):
      for name, readout in folds[fold].items():
        predicted = readout.predict(features[name][offset:offset + 1], weights[fold][name])
        clip_errors[name][first + offset] = end_point_errors(predicted, flow[offset:offset + 1],
                                                             probe_clips.bound).mean()
  # Views of a video are consecutive clips; a video's error is their mean (all clips have the same size).
  video_errors = {name: values.reshape(-1, data_config.num_eval_clips).mean(axis=1)
                  for name, values in clip_errors.items()}
  return {'epe': {name: float(values.mean()) for name, values in video_errors.items()},
          'epe_per_video': {name: [round(float(v), 5) for v in values] for name, values in video_errors.items()},
          'penalty': penalties}


def paired_difference(results: Dict, first: str, second: str) -> Dict[str, Dict[str, float]]:
  """Per endpoint, the mean over the videos of network `first`'s EPE minus `second`'s, and its standard error:
  whether a difference stands out of the videos' sampling noise (both saw the same clips)."""
  differences = {}
  for endpoint in results['endpoints']:
    per_video = (np.array(results['networks'][first]['epe_per_video'][endpoint])
                 - np.array(results['networks'][second]['epe_per_video'][endpoint]))
    differences[endpoint] = {'mean': float(per_video.mean()),
                             'stderr': float(per_video.std(ddof=1) / np.sqrt(len(per_video)))}
  return differences


def _squared_error(weights: np.ndarray, held_out: LinearReadout) -> float:
  """The held-out clips' squared error of `weights`, up to their flow's constant sum of squares."""
  return float(np.sum(weights * (held_out.gram @ weights)) - 2 * np.sum(weights * held_out.cross))


def network_names(config: ProbeConfig) -> List[str]:
  """`config.names`, or each network's folder (or file) name."""
  if config.names:
    if len(config.names) != len(config.networks):
      raise d3d_config.ConfigError(f'{len(config.names)} names for {len(config.networks)} networks')
    return list(config.names)
  return [os.path.basename(os.path.normpath(path)) for path in config.networks]


def resolve(config: ProbeConfig) -> Tuple[ProbeConfig, d3d_config.DataConfig]:
  """The config with its records filled in from the first network's, and that network's clip settings; checks what
  can fail before any readout is fitted."""
  if not config.networks:
    raise d3d_config.ConfigError('give at least one network to probe (a model_dir, checkpoint or .weights.h5)')
  if not config.endpoints or config.batch_size < 1 or config.num_clips < 1 or config.num_folds < 2:
    raise d3d_config.ConfigError('endpoints must be given, batch_size and num_clips be positive and num_folds at '
                                 'least 2')
  first = factory.network_config(config.networks[0])
  config = dataclasses.replace(config, records=config.records or first.data.eval_pattern)
  if not config.records:
    raise d3d_config.ConfigError(f'{config.networks[0]} names no evaluation records: give --records')
  if not video_input.glob_files(config.records):
    raise d3d_config.ConfigError(f'records={config.records!r} matches no files')
  video_input.check_first_record(config.records, 'records', ('rgb', 'flow'))
  network_names(config)
  data_config = dataclasses.replace(first.data, num_eval_clips=config.num_clips, num_eval_crops=1)
  return config, data_config


def run(config: ProbeConfig) -> Dict:
  """Probes every network, writes `motion_probe.json` and `motion_probe.png` to `output_dir`; returns the results."""
  config, data_config = resolve(config)
  networks = restore_networks(config)
  first_pixel_range = networks[0][1].model.pixel_range  # the trivial predictors see flow alone
  print(f'decoding the clips of {config.records}', flush=True)
  probe_clips = ProbeClips(config, data_config, first_pixel_range)
  results = {'bound_pixels': probe_clips.bound, 'endpoints': list(config.endpoints),
             'trivial': trivial_errors(probe_clips, first_pixel_range),
             'num_clips': probe_clips.num_clips, 'num_videos': probe_clips.num_videos, 'num_folds': config.num_folds,
             'config': dataclasses.asdict(config), 'networks': {}}
  for name, path, (network, network_config) in zip(network_names(config), config.networks, networks):
    print(f'probing {name} ({path}) at {", ".join(config.endpoints)}', flush=True)
    with tqdm.tqdm(total=2 * probe_clips.num_clips, desc=name, unit=' clips', disable=None,
                   leave=False) as progress:
      results['networks'][name] = {
          'path': path, **probe_network(network, network_config, config, data_config, probe_clips, progress)}
  if config.output_dir:
    tf.io.gfile.makedirs(config.output_dir)
    json_files.write_json(os.path.join(config.output_dir, RESULTS_FILENAME), results)
    plot(results, os.path.join(config.output_dir, PLOT_FILENAME))
  return results


def summary(results: Dict) -> str:
  """The results as a table: cross-fitted EPE (px) per network and endpoint, then the trivial predictors."""
  endpoints = results['endpoints']
  width = max(len(name) for name in list(results['networks']) + ['network']) + 2
  lines = ['network'.ljust(width) + ''.join(f'{e:>15}' for e in endpoints)]
  for name, network in results['networks'].items():
    lines.append(name.ljust(width) + ''.join(f'{network["epe"][e]:15.3f}' for e in endpoints))
  lines.append(', '.join(f'{name.replace("_", " ")} {value:.3f}' for name, value in results['trivial'].items())
               + f' (end-point error in px, cross-fitted over {results["num_folds"]} folds of '
                 f'{results["num_videos"]} videos the networks did not train on)')
  return '\n'.join(lines)


def plot(results: Dict, path: str) -> str:
  """EPE per endpoint, one line per network, the trivial predictors as horizontal lines."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(figsize=(7, 4))
  endpoints = results['endpoints']
  for name, network in results['networks'].items():
    axes.plot(endpoints, [network['epe'][e] for e in endpoints], marker='o', label=name)
  for (name, value), style in zip(results['trivial'].items(), ('--', ':')):
    axes.axhline(value, color='grey', linestyle=style, label=name.replace('_', ' '))
  axes.set_xlabel('endpoint (input side first)')
  axes.set_ylabel(f'cross-fitted end-point error (px, flow clipped to +-{results["bound_pixels"]:g})')
  axes.set_title('Motion probe: linear readout of TV-L1 flow')
  axes.legend()
  figure.tight_layout()
  with tf.io.gfile.GFile(path, 'wb') as f:
    figure.savefig(f, format='png', dpi=100)
  pyplot.close(figure)
  return path
