r"""Summarises converted video records and draws pictures of their RGB frames beside their optical flow.

  python -m tfrecord_tools.inspect_records --records="records/ucf101/train-*.tfrecord" \
      --label_map=records/ucf101/label_map.txt --output_dir=/tmp/inspect

Prints the number of records and shards, videos per class, frames per video, frame sizes and rates, and how flow is
stored. With --output_dir it writes one PNG per video for the first --num_videos videos: --frames_per_video rows of
[RGB frame | its flow as a colour-wheel picture], and a bottom row with a colour-wheel legend and the video's name.

Flow colours follow the Middlebury convention: hue is the direction (in image coordinates, y down: right red, down
yellow-green, left cyan, up violet), saturation the magnitude, and zero flow is white. The magnitude that gets full
colour is a fixed fraction of the records' flow bound, so pictures of one data set are comparable with each other.

A damaged record (truncated file, failed checksum, not a video SequenceExample) stops the command with one `error:`
line naming the file, the record and its byte offset; --skip_corrupt skips such records instead and counts them per
file. Exit status: 0 on success, 1 when --skip_corrupt skipped records, 2 when the glob matches nothing or a file
cannot be read (D3D_TRACEBACK=1 adds the traceback), 130 on Ctrl-C.
"""

# First, before anything imports TensorFlow (also in worker processes, which 'spawn' starts from this module as
# __mp_main__): its C++ start-up notices stay quiet.
if __name__ in ('__main__', '__mp_main__'):
  from d3d_core import quiet_start
  quiet_start.start_tensorflow()

import collections
import dataclasses
import os
import re
import statistics
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import tensorflow as tf
from absl import flags
from google.protobuf import message

from d3d_core import flow_quantization
from d3d_core import label_map
from d3d_core import schema
from tfrecord_tools import cli
from tfrecord_tools import record_file

# TV-L1 flow of 25 fps videos at short side 256 is mostly a few pixels; a quarter of the +-20 px storage bound
# uses the whole colour range for it, and larger motion saturates instead of washing the rest out.
FULL_COLOUR_FRACTION_OF_BOUND = 0.25
_REQUIRED_CONTEXT = (schema.MEDIA_ID, schema.LABEL_INDEX, schema.IMAGE_HEIGHT, schema.IMAGE_WIDTH)
_MAX_SIZES_LISTED = 5


class InspectError(Exception):
  """Records that cannot be inspected; the message names the file (and record) and the problem."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What the summary needs of one record, without its images."""
  shard: str
  media_id: str
  label_index: int
  label_string: str
  num_frames: int
  height: int
  width: int
  frame_rate: float
  flow_frames: int
  flow_format: str
  flow_bound: float


def find_shards(pattern: str) -> List[str]:
  """The files matching `pattern`, sorted; raises InspectError when there are none."""
  paths = sorted(tf.io.gfile.glob(pattern))
  if not paths:
    raise InspectError(f'no file matches --records={pattern!r}')
  return paths


def read_records(path: str, skipped: Optional[List[str]] = None) -> Iterator[Tuple[int, tf.train.SequenceExample]]:
  """(index, SequenceExample) of every record in `path`.

  A damaged record, or one that is not a video SequenceExample, raises InspectError naming the file, the record and
  its byte offset; when a `skipped` list is given, the record's description goes there instead, and reading goes on.
  """
  for record in record_file.read_records(path):
    try:
      example = _video_sequence_example(record)
    except InspectError as error:
      description = f'record {record.index} at byte {record.offset}: {error}'
      if skipped is None:
        raise InspectError(f'{path} {description} (--skip_corrupt skips damaged records)') from None
      skipped.append(description)
      continue
    yield record.index, example


def _video_sequence_example(record: record_file.Record) -> tf.train.SequenceExample:
  """The video SequenceExample that `record` holds; InspectError says why it holds none."""
  if record.damage:
    raise InspectError(record.damage)
  try:
    example = tf.train.SequenceExample.FromString(record.data)
  except message.DecodeError as error:
    raise InspectError(f'not a tf.train.SequenceExample ({error})') from None
  missing = [key for key in _REQUIRED_CONTEXT if _context_value(example, key) is None]
  if schema.IMAGE_ENCODED not in example.feature_lists.feature_list:
    missing.append(schema.IMAGE_ENCODED)
  if missing:
    raise InspectError(f'not a video SequenceExample of tfrecord_tools.convert; it lacks {", ".join(missing)}')
  return example


def _context_value(example: tf.train.SequenceExample, key: str, default=None):
  """The first value of a context feature, whatever its list type; `default` when absent."""
  if key not in example.context.feature:
    return default
  feature = example.context.feature[key]
  kind = feature.WhichOneof('kind')
  values = getattr(feature, kind).value if kind else []
  if not values:
    return default
  return values[0].decode() if isinstance(values[0], bytes) else values[0]


def _frame_count(example: tf.train.SequenceExample, key: str) -> int:
  feature_lists = example.feature_lists.feature_list
  return len(feature_lists[key].feature) if key in feature_lists else 0


def video_info(example: tf.train.SequenceExample, shard: str) -> VideoInfo:
  return VideoInfo(
      shard=shard,
      media_id=_context_value(example, schema.MEDIA_ID),
      label_index=int(_context_value(example, schema.LABEL_INDEX)),
      label_string=_context_value(example, schema.LABEL_STRING, ''),
      num_frames=_frame_count(example, schema.IMAGE_ENCODED),
      height=int(_context_value(example, schema.IMAGE_HEIGHT)),
      width=int(_context_value(example, schema.IMAGE_WIDTH)),
      frame_rate=float(_context_value(example, schema.IMAGE_FRAME_RATE, 0.0)),
      flow_frames=_frame_count(example, schema.FLOW_ENCODED),
      flow_format=_context_value(example, schema.FLOW_FORMAT, ''),
      flow_bound=float(_context_value(example, schema.FLOW_BOUND, 0.0)))


def class_name(index: int, label_string: str, class_names: Optional[Sequence[str]]) -> str:
  """The label map's name for `index` when there is a label map, else the record's own label string."""
  if class_names is None:
    return label_string
  return class_names[index] if 0 <= index < len(class_names) else f'<index {index} not in label map>'


@dataclasses.dataclass
class Summary:
  """The records of a glob, one `VideoInfo` each; the class names of the label map when one was given; and, per file,
  the descriptions of the damaged records that were skipped."""
  shards: List[str]
  videos: List[VideoInfo]
  class_names: Optional[Sequence[str]] = None
  skipped: Dict[str, List[str]] = dataclasses.field(default_factory=dict)

  def num_skipped(self) -> int:
    return sum(len(descriptions) for descriptions in self.skipped.values())

  def videos_per_class(self) -> List[Tuple[int, str, int]]:
    """(label index, class name, videos), by index; with a label map, its classes without videos count 0."""
    counts = collections.Counter(v.label_index for v in self.videos)
    names = {v.label_index: class_name(v.label_index, v.label_string, self.class_names) for v in self.videos}
    if self.class_names is not None:
      names.update(enumerate(self.class_names))
    return [(index, names[index], counts[index]) for index in sorted(names)]

  def frames_per_video(self) -> Tuple[int, float, int]:
    """(min, mean, max) frames per video."""
    frames = [v.num_frames for v in self.videos] or [0]
    return min(frames), statistics.fmean(frames), max(frames)

  def to_text(self) -> str:
    lines = [f'Records: {len(self.videos)} videos in {len(self.shards)} shard(s)'] + self._skipped_lines()
    if not self.videos:
      return '\n'.join(lines)
    classes = self.videos_per_class()
    lines.append(f'Videos per class ({len(classes)} classes):')
    name_width = max(len(name) for _, name, _ in classes)
    lines += [f'  {index:5d}  {name:<{name_width}}  {count}' for index, name, count in classes]
    if self.class_names is not None:
      disagreeing = sum(1 for v in self.videos if v.label_string and
                        v.label_string != class_name(v.label_index, v.label_string, self.class_names))
      if disagreeing:
        lines.append(f'  {disagreeing} videos have a label string that differs from the label map\'s name')
    least, mean, most = self.frames_per_video()
    lines.append(f'Frames per video: min {least}, mean {mean:.1f}, max {most} '
                 f'({sum(v.num_frames for v in self.videos)} in all)')
    lines.append('Frame size (height x width): ' + _counted(f'{v.height}x{v.width}' for v in self.videos))
    lines.append('Frame rate: ' + _counted(f'{v.frame_rate:g} fps' for v in self.videos))
    lines.append(self._flow_line())
    return '\n'.join(lines)

  def _skipped_lines(self) -> List[str]:
    """Per file with skipped records: how many, and the first one's description."""
    if not self.num_skipped():
      return []
    return [f'Skipped {self.num_skipped()} damaged record(s):'] + [
        f'  {path}: {len(descriptions)} (first: {descriptions[0]})'
        for path, descriptions in self.skipped.items() if descriptions]

  def _flow_line(self) -> str:
    with_flow = [v for v in self.videos if v.flow_frames]
    line = f'Flow: in {len(with_flow)} of {len(self.videos)} videos'
    if with_flow:
      line += ('; format ' + _counted(v.flow_format or 'unknown' for v in with_flow) +
               '; bound ' + _counted(f'+-{v.flow_bound:g} px' for v in with_flow))
    mismatched = sum(1 for v in with_flow if v.flow_frames != v.num_frames)
    if mismatched:
      line += f'; {mismatched} videos have a different number of flow and RGB frames'
    return line


def _counted(values) -> str:
  """'a (3 videos), b (1 video)' for the most common values, then how many others."""
  counts = collections.Counter(values).most_common()
  text = ', '.join(f'{value} ({count} video{"s" * (count != 1)})' for value, count in counts[:_MAX_SIZES_LISTED])
  if len(counts) > _MAX_SIZES_LISTED:
    text += f', and {len(counts) - _MAX_SIZES_LISTED} other values'
  return text


def summarize(paths: Sequence[str], class_names: Optional[Sequence[str]] = None,
              skip_corrupt: bool = False) -> Summary:
  """Reads every record of `paths` (without decoding images); a damaged one raises InspectError, or is skipped."""
  summary = Summary(shards=list(paths), videos=[], class_names=class_names)
  for path in paths:
    skipped = summary.skipped.setdefault(path, []) if skip_corrupt else None
    summary.videos += [video_info(example, path) for _, example in read_records(path, skipped)]
  return summary


def flow_to_color(flow: np.ndarray, full_colour_magnitude: float) -> np.ndarray:
  """Flow `[..., 2]` (pixels) -> uint8 RGB `[..., 3]`: hue = direction, saturation = magnitude, zero flow white."""
  flow = np.asarray(flow, np.float32)
  x, y = flow[..., 0], flow[..., 1]
  hsv = np.stack([np.degrees(np.arctan2(y, x)) % 360.0,
                  np.clip(np.hypot(x, y) / full_colour_magnitude, 0.0, 1.0),
                  np.ones_like(x)], axis=-1)
  rgb = cv2.cvtColor(hsv.reshape(-1, 1, 3), cv2.COLOR_HSV2RGB).reshape(hsv.shape)
  return np.rint(rgb * 255.0).astype(np.uint8)


def color_wheel_legend(size: int, full_colour_magnitude: float) -> np.ndarray:
  """uint8 RGB `[size, size, 3]`: the colour of every flow vector up to `full_colour_magnitude`, on black."""
  coordinates = (np.arange(size, dtype=np.float32) + 0.5 - size / 2) / (size / 2) * full_colour_magnitude
  flow = np.stack(np.meshgrid(coordinates, coordinates), axis=-1)  # [row, column, (x, y)]
  legend = flow_to_color(flow, full_colour_magnitude)
  legend[np.hypot(flow[..., 0], flow[..., 1]) > full_colour_magnitude] = 0
  return legend


def full_colour_magnitude(flow_bound: float) -> float:
  return FULL_COLOUR_FRACTION_OF_BOUND * flow_bound


def picture_frame_indices(num_frames: int, frames_per_video: int) -> List[int]:
  """Evenly spread frames, leaving out the last one, whose flow only repeats the one before it."""
  last = max(num_frames - 2, 0)
  return sorted(set(np.linspace(0, last, max(1, frames_per_video)).round().astype(int).tolist()))


def _decode(encoded: bytes, description: str) -> np.ndarray:
  bgr = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
  if bgr is None:
    raise InspectError(f'{description}: the image bytes do not decode')
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _frames(example: tf.train.SequenceExample, key: str, indices: Sequence[int], media_id: str) -> np.ndarray:
  features = example.feature_lists.feature_list[key].feature
  return np.stack([_decode(features[i].bytes_list.value[0], f'{media_id} {key} frame {i}') for i in indices])


def _fit_text(text: str, width: int, scale: float) -> str:
  """`text`, or its end after '..' when it is wider than `width`: the end of a media id (a file name) tells most."""
  fitted = text
  while len(fitted) > 3 and cv2.getTextSize(fitted, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
    text = text[1:]
    fitted = '..' + text
  return fitted


def _put_lines(image: np.ndarray, lines: Sequence[str], left: int) -> None:
  """White text lines, top-aligned, scaled to the image height so small frames still get readable text."""
  scale = max(0.3, image.shape[0] / 220)
  top = 0
  for line in lines:
    line = _fit_text(line, image.shape[1] - left - 2, scale)
    (_, text_height), baseline = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top += text_height + baseline
    cv2.putText(image, line, (left, top), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def render_video(example: tf.train.SequenceExample, frames_per_video: int,
                 class_names: Optional[Sequence[str]] = None) -> np.ndarray:
  """uint8 RGB picture of one record: rows of [RGB | flow colours], then a row with the legend and the video's name.

  With height H and width W of the frames and F picture frames, the picture is `[(F + 1) * H, 2 * W, 3]`, or
  `[(F + 1) * H, W, 3]` for RGB-only records.
  """
  info = video_info(example, '')
  indices = picture_frame_indices(info.num_frames, frames_per_video)
  columns = [_frames(example, schema.IMAGE_ENCODED, indices, info.media_id)]
  bound = info.flow_bound or schema.DEFAULT_FLOW_BOUND
  magnitude = full_colour_magnitude(bound)
  if info.flow_frames:
    flow_images = _frames(example, schema.FLOW_ENCODED, indices, info.media_id)
    columns.append(flow_to_color(flow_quantization.dequantize_flow(flow_images, bound), magnitude))
  rows = np.concatenate(columns, axis=2)  # [F, H, columns * W, 3]
  picture_rows = rows.reshape(-1, *rows.shape[2:])

  height = info.height
  footer = np.zeros((height, rows.shape[2], 3), np.uint8)
  name = class_name(info.label_index, info.label_string, class_names)
  lines = [info.media_id, f'class {info.label_index}: {name}', f'frames {", ".join(map(str, indices))}']
  text_left = 2
  if info.flow_frames:
    legend_size = min(height, footer.shape[1])
    footer[:legend_size, :legend_size] = color_wheel_legend(legend_size, magnitude)
    text_left += legend_size
    lines.append(f'full colour: {magnitude:g} px')
  _put_lines(footer, lines, text_left)
  return np.concatenate([picture_rows, footer], axis=0)


def _file_name(index: int, media_id: str) -> str:
  return f'{index:03d}_{re.sub(r"[^A-Za-z0-9._-]+", "_", media_id)}.png'


def write_pictures(paths: Sequence[str], output_dir: str, num_videos: int, frames_per_video: int,
                   class_names: Optional[Sequence[str]] = None, skip_corrupt: bool = False) -> List[str]:
  """PNG pictures (`render_video`) of the first `num_videos` records of `paths` (the damaged ones skipped, with
  `skip_corrupt`); returns the files written."""
  tf.io.gfile.makedirs(output_dir)
  written = []
  for path in paths:
    for _, example in read_records(path, [] if skip_corrupt else None):
      if len(written) >= num_videos:
        return written
      picture = render_video(example, frames_per_video, class_names)
      ok, png = cv2.imencode('.png', cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
      if not ok:
        raise InspectError(f'OpenCV could not encode a {picture.shape} picture as PNG')
      file_path = os.path.join(output_dir, _file_name(len(written), _context_value(example, schema.MEDIA_ID)))
      with tf.io.gfile.GFile(file_path, 'wb') as f:
        f.write(png.tobytes())
      written.append(file_path)
  return written


def define_flags() -> None:
  """Command-line flags; defined only when run as a program, so importing this module defines none."""
  flags.DEFINE_string('records', None, 'Glob of the TFRecord files, e.g. "records/train-*.tfrecord".')
  flags.DEFINE_string('label_map', '', 'Label map to name the classes by; default: the records\' clip/label/string.')
  flags.DEFINE_string('output_dir', '', 'Write PNG pictures of RGB frames and their flow here; none when empty.')
  flags.DEFINE_integer('num_videos', 3, 'Pictures of this many videos (the first ones of the sorted files).')
  flags.DEFINE_integer('frames_per_video', 4, 'Frames per picture, spread evenly over the video.')
  flags.DEFINE_bool('skip_corrupt', False, 'Skip damaged records (truncated, failed checksum, not a video '
                    'SequenceExample) and count them per file, instead of stopping at the first; exit status 1 '
                    'when any were skipped.')
  flags.mark_flag_as_required('records')


FLAGS = flags.FLAGS


def inspect_records() -> int:
  """Prints the summary of the records the flags name, writes their pictures, and returns the exit status."""
  class_names = label_map.read_label_map(FLAGS.label_map) if FLAGS.label_map else None
  paths = find_shards(FLAGS.records)
  summary = summarize(paths, class_names, FLAGS.skip_corrupt)
  print(summary.to_text())
  if FLAGS.output_dir:
    for path in write_pictures(paths, FLAGS.output_dir, FLAGS.num_videos, FLAGS.frames_per_video, class_names,
                               FLAGS.skip_corrupt):
      print(f'Wrote {path}')
  return cli.EXIT_SKIPPED if summary.num_skipped() else cli.EXIT_OK


def main(argv):
  del argv  # the flags parser refuses arguments that are not flags
  return inspect_records()


if __name__ == '__main__':
  define_flags()
  cli.run_main(main, (InspectError, ValueError))
