"""Generates the motion benchmark: short videos whose classes differ by motion, or by an object's colour and motion.

Each video shows a soft-edged elliptical object, textured with a crop of a real image that scikit-image ships, over a
background cut from another (sometimes the same) image. The class says how the object moves: by default translation
left, right, up or down, rotation clockwise or counter-clockwise, zoom in or out; `classes` picks other sets from
`MOTIONS`, for example the eight translation directions 45 degrees apart (`TRANSLATION_CLASSES`). Everything else is
drawn independently of the class: textures, position, orientation, size, speed, a slow background drift, brightness,
flicker and sensor noise; the codec adds real compression. The frames of a video are a sample of the same
distribution whatever its class:
  - the object's position is uniform on the frame seen as a torus (a translating object leaves one side and enters
    at the other), its orientation is uniform, and its scale follows the same distribution as a zoom trajectory's
    frames, so one frame carries no label information;
  - the classes come in time-reversed pairs (left/right, up/down, the diagonals, clockwise/counter-clockwise, in/out)
    and the nuisances are time-symmetric, so even the unordered set of frames cannot tell the two classes of a pair
    apart.
A network has to see motion, which an optical-flow network gets directly and an RGB network has to learn: the
setting where distilling a flow teacher into an RGB student should pay. A horizontal flip turns left into right and
clockwise into counter-clockwise, so train on this dataset with random flips off.

Complementary classes (`complementary_classes`, e.g. `KINDS` x two translations): a class is an object kind and a
motion, named `<kind>_<motion>` (`red_translate_left`). The kind is the object's colour: a constant chroma over the
object's own luminance texture, so one frame shows the kind and TV-L1, which sees luminance only, cannot; the motion
is as above, which flow shows and one frame does not. RGB alone tells the kinds apart, flow alone the motions, and
only both together the class: as on real datasets, the two streams are complementary.

The output is the layout `tfrecord_tools.convert --source=csv` reads:
  <output_dir>/train.csv, test.csv     `path,label`, paths relative to output_dir
  <output_dir>/{train,test}/<class>/<class>_NNN.mp4
  <output_dir>/motion_dataset.json     the config that made it, to reproduce it

  python -m tfrecord_tools.make_motion_dataset --output_dir=/tmp/motion --seed=0
"""

import csv
import dataclasses
import math
import os
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags
import cv2
import numpy as np
import skimage.data

from d3d_core import json_files

SPLITS = ('train', 'test')
# Real photographs and textures in the scikit-image wheel (no download), each with detail at every scale used here
# (flat ones such as `moon` would hide a rotating object's motion); grayscale ones are used as gray RGB.
TEXTURE_NAMES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'camera', 'brick', 'grass',
                 'gravel', 'coins')
# Codecs that OpenCV's FFmpeg backend both writes and reads back; the file extension follows the codec.
CODEC_EXTENSIONS = {'mp4v': '.mp4', 'MJPG': '.avi'}
MANIFEST_FIELDS = ('path', 'label')
CONFIG_FILENAME = 'motion_dataset.json'

# Motion class -> (unit translation direction in image coordinates (y down), rotation sign, zoom sign). A positive
# rotation sign turns the object clockwise on screen; a positive zoom sign makes it grow. New classes go at the end:
# a video's random stream is keyed by its class's position here.
_DIAGONAL = math.sqrt(0.5)
MOTIONS = {
    'translate_left': ((-1.0, 0.0), 0, 0),
    'translate_right': ((1.0, 0.0), 0, 0),
    'translate_up': ((0.0, -1.0), 0, 0),
    'translate_down': ((0.0, 1.0), 0, 0),
    'rotate_clockwise': ((0.0, 0.0), 1, 0),
    'rotate_counterclockwise': ((0.0, 0.0), -1, 0),
    'zoom_in': ((0.0, 0.0), 0, 1),
    'zoom_out': ((0.0, 0.0), 0, -1),
    'translate_up_left': ((-_DIAGONAL, -_DIAGONAL), 0, 0),
    'translate_up_right': ((_DIAGONAL, -_DIAGONAL), 0, 0),
    'translate_down_left': ((-_DIAGONAL, _DIAGONAL), 0, 0),
    'translate_down_right': ((_DIAGONAL, _DIAGONAL), 0, 0),
}
# The default class set: four directions of translation, two of rotation, two of zoom.
CLASS_NAMES = tuple(list(MOTIONS)[:8])
# Translation in eight directions, 45 degrees apart.
TRANSLATION_CLASSES = tuple(name for name in MOTIONS if name.startswith('translate_'))
# Object kind -> its colour as (Cb, Cr) of BT.601 YCbCr, the luma-free part of RGB that OpenCV's RGB2GRAY (and so
# TV-L1) ignores: four hues 90 degrees apart, all of one saturation. New kinds go at the end (random streams are
# keyed by position here).
KINDS = {'red': (-8.0, 31.0), 'yellow': (-31.0, -8.0), 'green': (8.0, -31.0), 'blue': (31.0, 8.0)}
# The object's luminance texture is squeezed into this range so that the coloured object stays within 0..255: clipped
# channels would change its luma, and with it its flow.
_KIND_LUMA_RANGE = (56.0, 199.0)  # the largest offset is blue's and yellow's 55 levels of B
# Largest object semi-axis, in frame short sides: below 1/2 so the object fits the frame and its copies across the
# wrapped edges never overlap.
_LARGEST_OBJECT_RADIUS = 0.45


def complementary_classes(kinds: Sequence[str], motions: Sequence[str]) -> Tuple[str, ...]:
  """Every kind with every motion, `<kind>_<motion>`, kind by kind."""
  return tuple(f'{kind}_{motion}' for kind in kinds for motion in motions)


def parse_class(name: str) -> Tuple[str, str]:
  """(kind or '' for a motion-only class, motion) of a class name; ValueError for a name that is neither."""
  kind, _, motion = name.partition('_')
  if kind in KINDS and motion in MOTIONS:
    return kind, motion
  if name in MOTIONS:
    return '', name
  raise ValueError(f'unknown class {name!r}: a motion from {sorted(MOTIONS)}, or <kind>_<motion> with a kind from '
                   f'{sorted(KINDS)}')


@dataclasses.dataclass(frozen=True)
class MotionDatasetConfig:
  """What to generate. Lengths are fractions of the frame's short side so that a change of size keeps the look."""
  seed: int = 0
  classes: Tuple[str, ...] = CLASS_NAMES  # names from MOTIONS, or <kind>_<motion> (`complementary_classes`)
  # Defaults: 136 videos, 2040 frame pairs of TV-L1, about 2.5 minutes of conversion on 2 cores at short side 64.
  videos_per_class_train: int = 12
  videos_per_class_test: int = 5
  num_frames: int = 16
  width: int = 96
  height: int = 72
  frame_rate: float = 25.0
  codec: str = 'mp4v'
  # Object: semi-major axis at scale 1 (see object_radius_range), shape and per-frame motion ranges (uniform).
  object_radius: Tuple[float, float] = (0.18, 0.26)
  object_aspect: Tuple[float, float] = (0.6, 1.0)
  translation_speed: Tuple[float, float] = (0.015, 0.035)
  translation_jitter_degrees: float = 15.0  # the direction of a translation deviates by up to this much
  rotation_degrees_per_frame: Tuple[float, float] = (4.0, 8.0)
  zoom_log_rate_per_frame: Tuple[float, float] = (0.03, 0.06)
  # Probability that the object is cut from the background's image at the background's scale: only motion shows it.
  camouflage_probability: float = 0.25
  # Nuisances, independent of the class.
  background_drift_speed: float = 0.006
  # Short side of the texture images, in frame short sides: the background shows a window of its image, the object
  # (smaller) shows most of its image so that it always carries texture that motion can be seen on.
  background_texture_scale: float = 2.5
  object_texture_scale: float = 1.0
  brightness_gain: Tuple[float, float] = (0.85, 1.15)
  flicker_std: float = 0.02
  noise_std: Tuple[float, float] = (2.0, 5.0)

  def __post_init__(self):
    for name in self.classes:
      try:
        parse_class(name)
      except ValueError as error:
        raise ValueError(f'classes: {error}') from None
    if len(set(self.classes)) < 2 or len(set(self.classes)) != len(self.classes):
      raise ValueError(f'classes must be at least two distinct names; got {self.classes}')
    if self.codec not in CODEC_EXTENSIONS:
      raise ValueError(f'codec must be one of {sorted(CODEC_EXTENSIONS)}, got {self.codec!r}')
    if self.num_frames < 2:
      raise ValueError(f'num_frames must be at least 2 to show motion, got {self.num_frames}')
    if min(self.width, self.height) < 16:
      raise ValueError(f'frames of {self.width}x{self.height} are too small; use at least 16 pixels a side')
    if self.videos_per_class_train < 1 or self.videos_per_class_test < 0:
      raise ValueError('videos_per_class_train must be >= 1 and videos_per_class_test >= 0, got '
                       f'{self.videos_per_class_train} and {self.videos_per_class_test}')

  def object_radius_range(self) -> Tuple[float, float]:
    """`object_radius`, shrunk for long clips so that the fastest zoom's largest object still fits the frame."""
    if not any(MOTIONS[parse_class(name)[1]][2] for name in self.classes):
      return self.object_radius
    largest = self.object_radius[1] * math.exp(self.zoom_log_rate_per_frame[1] * (self.num_frames - 1) / 2)
    shrink = min(1.0, _LARGEST_OBJECT_RADIUS / largest)
    return self.object_radius[0] * shrink, self.object_radius[1] * shrink

  @property
  def extension(self) -> str:
    return CODEC_EXTENSIONS[self.codec]

  def videos_per_class(self, split: str) -> int:
    return self.videos_per_class_train if split == 'train' else self.videos_per_class_test


# Smoke tests: about 300 frame pairs of TV-L1 (under a minute of one core).
QUICK_CONFIG = MotionDatasetConfig(videos_per_class_train=3, videos_per_class_test=1, num_frames=10, width=64,
                                   height=48)


def load_textures(short_side: int) -> List[np.ndarray]:
  """The texture pool: float32 RGB images in [0, 255], resized so their short side is `short_side`."""
  textures = []
  for name in TEXTURE_NAMES:
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
      image = np.repeat(image[:, :, None], 3, axis=2)
    scale = short_side / min(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    textures.append(cv2.resize(image[:, :, :3], size, interpolation=cv2.INTER_AREA).astype(np.float32))
  return textures


@dataclasses.dataclass(frozen=True)
class _Trajectory:
  """Per-frame state of the object and the background, arrays of length num_frames."""
  center_x: np.ndarray
  center_y: np.ndarray
  angle: np.ndarray  # radians, clockwise on screen
  scale: np.ndarray
  background_x: np.ndarray  # where the frame's corner sits in the background image, pixels
  background_y: np.ndarray


def _sample_trajectory(motion: str, config: MotionDatasetConfig, background_shape: Tuple[int, ...],
                       rng: np.random.Generator) -> _Trajectory:
  """Motion set by the class, everything else drawn the same way for every class, centred on the clip's middle."""
  direction, rotation_sign, zoom_sign = MOTIONS[motion]
  short_side = min(config.width, config.height)
  steps = np.arange(config.num_frames) - (config.num_frames - 1) / 2

  speed = rng.uniform(*config.translation_speed) * short_side
  jitter = math.radians(rng.uniform(-config.translation_jitter_degrees, config.translation_jitter_degrees))
  velocity_x = speed * (direction[0] * math.cos(jitter) - direction[1] * math.sin(jitter))
  velocity_y = speed * (direction[0] * math.sin(jitter) + direction[1] * math.cos(jitter))
  angular_speed = math.radians(rng.uniform(*config.rotation_degrees_per_frame))
  zoom_rate = rng.uniform(*config.zoom_log_rate_per_frame)
  # A non-zooming object's fixed scale is one frame of a zoom trajectory, so scales have one distribution throughout.
  zoom_offset = steps * zoom_sign if zoom_sign else np.full_like(steps, rng.uniform(steps[0], steps[-1]))

  drift_angle = rng.uniform(0, 2 * math.pi)
  drift = rng.uniform(0, config.background_drift_speed) * short_side
  return _Trajectory(
      center_x=(rng.uniform(0, config.width) + velocity_x * steps) % config.width,
      center_y=(rng.uniform(0, config.height) + velocity_y * steps) % config.height,
      angle=rng.uniform(0, 2 * math.pi) + rotation_sign * angular_speed * steps,
      scale=np.exp(zoom_rate * zoom_offset),
      background_x=rng.uniform(0, background_shape[1] - config.width) + drift * math.cos(drift_angle) * steps,
      background_y=rng.uniform(0, background_shape[0] - config.height) + drift * math.sin(drift_angle) * steps)


def render_video(class_name: str, config: MotionDatasetConfig, backgrounds: Sequence[np.ndarray],
                 objects: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
  """One video of `class_name`: uint8 RGB frames `[num_frames, height, width, 3]`, before compression.

  `backgrounds` and `objects` are the same texture pool (`load_textures`) at the two scales of the config.
  """
  kind, motion = parse_class(class_name)
  width, height, short_side = config.width, config.height, min(config.width, config.height)
  background = backgrounds[rng.integers(len(backgrounds))]
  # Camouflage: the object is another piece of the background image at the same scale.
  texture = background if rng.uniform() < config.camouflage_probability else objects[rng.integers(len(objects))]
  if kind:
    texture = colour_texture(texture, kind)
  trajectory = _sample_trajectory(motion, config, background.shape, rng)
  # Where the object's centre sits in its texture image.
  anchor_x, anchor_y = rng.uniform(0, texture.shape[1]), rng.uniform(0, texture.shape[0])
  radius = rng.uniform(*config.object_radius_range()) * short_side
  semi_minor = radius * rng.uniform(*config.object_aspect)
  gain = rng.uniform(*config.brightness_gain)
  noise_std = rng.uniform(*config.noise_std)

  grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
  frames = np.empty((config.num_frames, height, width, 3), np.uint8)
  for t in range(config.num_frames):
    background_frame = cv2.remap(background, grid_x + np.float32(trajectory.background_x[t]),
                                 grid_y + np.float32(trajectory.background_y[t]), cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT101)
    # Offsets to the nearest copy of the centre on the torus, then into the object's own (unrotated, unscaled) frame.
    dx = (grid_x - trajectory.center_x[t] + width / 2) % width - width / 2
    dy = (grid_y - trajectory.center_y[t] + height / 2) % height - height / 2
    cos_a, sin_a, scale = math.cos(trajectory.angle[t]), math.sin(trajectory.angle[t]), trajectory.scale[t]
    u = (cos_a * dx + sin_a * dy) / scale
    v = (-sin_a * dx + cos_a * dy) / scale
    object_frame = cv2.remap(texture, (anchor_x + u).astype(np.float32), (anchor_y + v).astype(np.float32),
                             cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    # Soft edge about one pixel wide on screen.
    rho = np.sqrt((u / radius)**2 + (v / semi_minor)**2)
    mask = np.clip((1 - rho) * semi_minor * scale + 0.5, 0, 1)[:, :, None]
    frame = background_frame * (1 - mask) + object_frame * mask
    frame = frame * (gain * (1 + config.flicker_std * rng.standard_normal()))
    frame += rng.normal(0, noise_std, frame.shape)
    frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
  return frames


def colour_texture(texture: np.ndarray, kind: str) -> np.ndarray:
  """`texture`'s luma, squeezed into _KIND_LUMA_RANGE, with the kind's chroma: float32 RGB whose RGB2GRAY is that
  luma, so that only colour, which flow does not see, tells the kinds apart."""
  luma = cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY)
  low, high = _KIND_LUMA_RANGE
  luma = low + (high - low) / 255.0 * luma
  cb, cr = KINDS[kind]
  # BT.601 YCbCr to RGB; its luma weights are RGB2GRAY's, so each offset below adds no luma.
  offsets = np.float32([1.402 * cr, -0.344136 * cb - 0.714136 * cr, 1.772 * cb])
  return luma[:, :, None] + offsets


def write_video(frames: np.ndarray, path: str, frame_rate: float, codec: str) -> None:
  """uint8 RGB `[T, H, W, 3]` -> a video file that OpenCV (and so the converter) reads back."""
  height, width = frames.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), frame_rate, (width, height))
  if not writer.isOpened():
    raise RuntimeError(f'OpenCV cannot write {path} with codec {codec!r}')
  try:
    for frame in frames:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()


def _video_rng(seed: int, split: str, class_name: str, index: int) -> np.random.Generator:
  """One independent stream per video, so a video does not depend on how many others are made."""
  kind, motion = parse_class(class_name)
  key = [seed, SPLITS.index(split), list(MOTIONS).index(motion), index]
  return np.random.default_rng(key + [1 + list(KINDS).index(kind)] if kind else key)


def generate_dataset(config: MotionDatasetConfig, output_dir: str) -> Dict[str, str]:
  """Writes the videos, one `path,label` manifest per split and the config; returns {split: manifest path}.

  The config file is written last, so its presence marks a complete dataset.
  """
  os.makedirs(output_dir, exist_ok=True)
  short_side = min(config.width, config.height)
  backgrounds = load_textures(round(config.background_texture_scale * short_side))
  objects = load_textures(round(config.object_texture_scale * short_side))
  manifests = {}
  for split in SPLITS:
    rows = []
    for class_name in config.classes:
      class_dir = os.path.join(output_dir, split, class_name)
      os.makedirs(class_dir, exist_ok=True)
      for index in range(config.videos_per_class(split)):
        relative_path = f'{split}/{class_name}/{class_name}_{index:03d}{config.extension}'
        rng = _video_rng(config.seed, split, class_name, index)
        frames = render_video(class_name, config, backgrounds, objects, rng)
        write_video(frames, os.path.join(output_dir, relative_path), config.frame_rate, config.codec)
        rows.append((relative_path, class_name))
    manifests[split] = os.path.join(output_dir, f'{split}.csv')
    with open(manifests[split], 'w', newline='') as f:
      writer = csv.writer(f, lineterminator='\n')
      writer.writerow(MANIFEST_FIELDS)
      writer.writerows(rows)
  json_files.write_json(os.path.join(output_dir, CONFIG_FILENAME),
                        {'class_names': list(config.classes), 'config': dataclasses.asdict(config)})
  return manifests


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so that importing this module adds none."""
  flags.DEFINE_string('output_dir', None, 'Folder for the videos, train.csv, test.csv and motion_dataset.json.')
  flags.DEFINE_integer('seed', 0, 'Seed: the same seed gives the same dataset.')
  flags.DEFINE_integer('videos_per_class_train', MotionDatasetConfig.videos_per_class_train, 'Train videos per class.')
  flags.DEFINE_integer('videos_per_class_test', MotionDatasetConfig.videos_per_class_test, 'Test videos per class.')
  flags.DEFINE_list('classes', list(MotionDatasetConfig.classes), f'Classes: motions, from {", ".join(MOTIONS)}; '
                    f'or <kind>_<motion>, kinds from {", ".join(KINDS)} (e.g. red_translate_left).')
  flags.DEFINE_integer('num_frames', MotionDatasetConfig.num_frames, 'Frames per video.')
  flags.DEFINE_string('size', f'{MotionDatasetConfig.width}x{MotionDatasetConfig.height}', 'Frame size, WIDTHxHEIGHT.')
  flags.DEFINE_float('frame_rate', MotionDatasetConfig.frame_rate, 'Frames per second written in the files.')
  flags.DEFINE_enum('codec', MotionDatasetConfig.codec, sorted(CODEC_EXTENSIONS), 'FourCC of the video files.')
  flags.DEFINE_bool('quick', False, 'Tiny preset for smoke tests (flags given explicitly still win): '
                    f'{QUICK_CONFIG.videos_per_class_train}+{QUICK_CONFIG.videos_per_class_test} videos per class, '
                    f'{QUICK_CONFIG.num_frames} frames of {QUICK_CONFIG.width}x{QUICK_CONFIG.height}.')
  flags.mark_flag_as_required('output_dir')


def _parse_size(text: str) -> Tuple[int, int]:
  try:
    width, height = (int(part) for part in text.lower().split('x'))
  except ValueError:
    raise app.UsageError(f'--size must look like 96x72, got {text!r}') from None
  return width, height


def config_from_flags() -> MotionDatasetConfig:
  """The preset (default or --quick), overridden by the flags given on the command line."""
  overrides = {name: FLAGS[name].value for name in ('seed', 'videos_per_class_train', 'videos_per_class_test',
                                                    'num_frames', 'frame_rate', 'codec') if FLAGS[name].present}
  if FLAGS['classes'].present:
    overrides['classes'] = tuple(FLAGS.classes)
  if FLAGS['size'].present:
    overrides['width'], overrides['height'] = _parse_size(FLAGS.size)
  try:
    return dataclasses.replace(QUICK_CONFIG if FLAGS.quick else MotionDatasetConfig(), **overrides)
  except ValueError as error:
    raise app.UsageError(str(error)) from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = config_from_flags()
  manifests = generate_dataset(config, FLAGS.output_dir)
  for split, path in manifests.items():
    print(f'{split}: {config.videos_per_class(split) * len(config.classes)} videos listed in {path}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
