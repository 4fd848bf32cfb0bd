"""Reads the list of videos to convert, with their labels, from the split formats of common datasets.

Sources:
  csv       a CSV with a header `path,label` and optional `start,end` (seconds); relative paths resolve against
            `video_root`, or the CSV's folder when no `video_root` is given.
  folder    `<input>/<class>/<video file>`.
  ucf101    the official `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt` in `input`; videos under `video_root`.
  hmdb51    the official `<class>_test_split<N>.txt` files in `input`; videos at `<video_root>/<class>/<video>`.
  kinetics  the official CSV `label,youtube_id,time_start,time_end,split` in `input`; clips anywhere under
            `video_root` named `<youtube_id>_<start:06d>_<end:06d>.<ext>`, or whole videos `<youtube_id>.<ext>`,
            which are cut by the CSV times. Rows whose video is not there are listed as missing, not fatal.

Class order: UCF-101's classInd.txt order; sorted class names for every other source (stable across runs).
"""

import csv
import dataclasses
import io
import os
import re
from typing import Dict, Iterable, List, Optional, Tuple

import tensorflow as tf

from d3d_core import cli

SOURCES = ('csv', 'folder', 'ucf101', 'hmdb51', 'kinetics')
SUBSETS = ('train', 'test')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg', '.flv', '.wmv', '.3gp', '.ogv')

_HMDB_SUBSET_IDS = {'train': '1', 'test': '2'}  # 0 marks videos in neither subset
_HMDB_SPLIT_FILE = re.compile(r'^(?P<label>.+)_test_split(?P<split>\d)\.txt$')


class ManifestError(Exception):
  """A split file or folder that cannot be read as the chosen source; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class VideoEntry:
  """One video (or one [start, end) clip of it) to convert."""
  path: str
  label: str
  media_id: str  # unique within a job; becomes `clip/media_id`
  start: Optional[float] = None  # seconds
  end: Optional[float] = None  # seconds


@dataclasses.dataclass(frozen=True)
class MissingVideo:
  """A manifest row whose video file is not there."""
  media_id: str
  path: str
  reason: str


@dataclasses.dataclass
class Manifest:
  entries: List[VideoEntry]  # sorted by media_id
  class_names: List[str]  # index = label index
  missing: List[MissingVideo]


@dataclasses.dataclass(frozen=True)
class SourceConfig:
  """Where the video list comes from."""
  source: str = 'csv'
  input: str = ''  # the CSV file, the class-folder root, or the folder holding the split files
  video_root: str = ''
  split: int = 1  # ucf101: 1..3; hmdb51: 1..3
  subset: str = ''  # ucf101, hmdb51: 'train' or 'test' (required); kinetics: optional filter on the split column

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f'source must be one of {SOURCES}, got {self.source!r}')
    if not self.input:
      raise ValueError(f'source {self.source} needs an input path')
    if self.source in ('ucf101', 'hmdb51'):
      if self.subset not in SUBSETS:
        raise ValueError(f'source {self.source} needs subset train or test, got {self.subset!r}')
      if self.split not in (1, 2, 3):
        raise ValueError(f'source {self.source} has splits 1, 2 and 3, got {self.split}')
      if not self.video_root:
        raise ValueError(f'source {self.source} needs video_root, the folder of the videos')
    elif self.source in ('csv', 'folder') and self.subset:
      raise ValueError(f'source {self.source} has no subsets; got subset {self.subset!r}')
    if self.source == 'kinetics' and not self.video_root:
      raise ValueError('source kinetics needs video_root, the folder of the downloaded clips')


def _read_text(path: str) -> str:
  """The text of a split file; ManifestError names the file when it is missing, unreadable or not UTF-8."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
  except tf.errors.NotFoundError:
    raise ManifestError(f'{path}: not found') from None
  except tf.errors.OpError as error:
    raise ManifestError(f'{path}: cannot be read ({cli.error_reason(error)})') from None
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as error:
    line = data[:error.start].count(b'\n') + 1
    raise ManifestError(f'{path} line {line}: not UTF-8 text (byte {data[error.start]:#04x})') from None


def _read_csv(path: str, required: Iterable[str]) -> List[Tuple[int, Dict[str, str]]]:
  """(line number, row) for each row of a CSV file with a header; lines with no data, blank or not, are skipped.

  Line numbers are the file's own, from 1 at its first line, as an editor shows them: errors point at the line to fix.
  """
  reader = csv.reader(io.StringIO(_read_text(path)))
  header = None
  rows = []
  for fields in reader:
    fields = [field.strip() for field in fields]
    if not any(fields):
      continue
    if header is None:
      header = fields
      missing_columns = set(required) - set(header)
      if missing_columns:
        raise ManifestError(f'{path} line {reader.line_num}: header {header} lacks the columns '
                            f'{sorted(missing_columns)}')
    else:
      rows.append((reader.line_num, dict(zip(header, fields + [''] * (len(header) - len(fields))))))
  if header is None:
    raise ManifestError(f'{path}: empty; expected a header line with the columns {sorted(required)}')
  return rows


def _strip_extension(path: str) -> str:
  return os.path.splitext(path)[0]


def _seconds(value: str, path: str, line: int, column: str) -> Optional[float]:
  if not value:
    return None
  try:
    return float(value)
  except ValueError:
    raise ManifestError(f'{path} line {line}: {column} {value!r} is not a number of seconds') from None


def _read_csv_source(config: SourceConfig) -> List[VideoEntry]:
  root = config.video_root or os.path.dirname(config.input)
  entries = []
  for line, row in _read_csv(config.input, ('path', 'label')):
    if not row['path'] or not row['label']:
      raise ManifestError(f'{config.input} line {line}: empty path or label')
    start = _seconds(row.get('start', ''), config.input, line, 'start')
    end = _seconds(row.get('end', ''), config.input, line, 'end')
    path = row['path'] if '://' in row['path'] or os.path.isabs(row['path']) else os.path.join(root, row['path'])
    media_id = _strip_extension(os.path.relpath(path, root) if path.startswith(root + '/') else path)
    if start is not None or end is not None:
      media_id += f'_{start or 0:.3f}_{"end" if end is None else format(end, ".3f")}'
    entries.append(VideoEntry(path=path, label=row['label'], media_id=media_id, start=start, end=end))
  return entries


def _read_folder_source(config: SourceConfig) -> Tuple[List[VideoEntry], List[str]]:
  if not tf.io.gfile.isdir(config.input):
    raise ManifestError(f'{config.input}: not a folder of class folders')
  class_names = sorted(name.rstrip('/') for name in tf.io.gfile.listdir(config.input)
                       if not name.startswith('.') and tf.io.gfile.isdir(os.path.join(config.input, name)))
  entries = []
  for label in class_names:
    folder = os.path.join(config.input, label)
    for name in sorted(tf.io.gfile.listdir(folder)):
      if not name.startswith('.') and name.lower().endswith(VIDEO_EXTENSIONS):
        entries.append(VideoEntry(path=os.path.join(folder, name), label=label,
                                  media_id=f'{label}/{_strip_extension(name)}'))
  return entries, class_names


def _ucf101_class_names(folder: str) -> List[str]:
  path = os.path.join(folder, 'classInd.txt')
  class_names = []
  for line, text in enumerate(_read_text(path).splitlines(), start=1):
    if not text.strip():
      continue
    fields = text.split()
    if len(fields) != 2 or fields[0] != str(len(class_names) + 1):
      raise ManifestError(f'{path} line {line}: expected "{len(class_names) + 1} ClassName", got {text!r}')
    class_names.append(fields[1])
  return class_names


def _read_ucf101(config: SourceConfig) -> Tuple[List[VideoEntry], List[str]]:
  class_names = _ucf101_class_names(config.input)
  path = os.path.join(config.input, f'{config.subset}list0{config.split}.txt')
  entries = []
  for line, text in enumerate(_read_text(path).splitlines(), start=1):
    fields = text.split()
    if not fields:
      continue
    relative_path = fields[0]
    label = relative_path.split('/')[0]
    if label not in class_names:
      raise ManifestError(f'{path} line {line}: class folder {label!r} is not in classInd.txt')
    if len(fields) > 1 and fields[1] != str(class_names.index(label) + 1):
      raise ManifestError(f'{path} line {line}: label {fields[1]} disagrees with the class folder {label!r}')
    entries.append(VideoEntry(path=os.path.join(config.video_root, relative_path), label=label,
                              media_id=_strip_extension(os.path.basename(relative_path))))
  return entries, class_names


def _read_hmdb51(config: SourceConfig) -> Tuple[List[VideoEntry], List[str]]:
  if not tf.io.gfile.isdir(config.input):
    raise ManifestError(f'{config.input}: not a folder of HMDB-51 split files')
  split_files = {}
  for name in tf.io.gfile.listdir(config.input):
    match = _HMDB_SPLIT_FILE.match(name)
    if match and int(match['split']) == config.split:
      split_files[match['label']] = os.path.join(config.input, name)
  if not split_files:
    raise ManifestError(f'{config.input}: no <class>_test_split{config.split}.txt files')
  wanted = _HMDB_SUBSET_IDS[config.subset]
  entries = []
  for label, path in sorted(split_files.items()):
    for line, text in enumerate(_read_text(path).splitlines(), start=1):
      fields = text.split()
      if not fields:
        continue
      if len(fields) != 2 or fields[1] not in ('0', '1', '2'):
        raise ManifestError(f'{path} line {line}: expected "video.avi 0|1|2", got {text!r}')
      if fields[1] == wanted:
        entries.append(VideoEntry(path=os.path.join(config.video_root, label, fields[0]), label=label,
                                  media_id=_strip_extension(fields[0])))
  return entries, sorted(split_files)


def _index_videos(root: str) -> Dict[str, str]:
  """Video file stem -> path, for every video file under `root` (one listing, not one lookup per row)."""
  if not tf.io.gfile.isdir(root):
    raise ManifestError(f'{root}: video folder not found')
  index = {}
  for folder, _, names in tf.io.gfile.walk(root):
    for name in names:
      if name.lower().endswith(VIDEO_EXTENSIONS):
        index.setdefault(_strip_extension(name), os.path.join(folder, name))
  return index


def _read_kinetics(config: SourceConfig) -> Tuple[List[VideoEntry], List[str], List[MissingVideo]]:
  rows = _read_csv(config.input, ('label', 'youtube_id', 'time_start', 'time_end'))
  videos = _index_videos(config.video_root)
  entries, missing = [], []
  for line, row in rows:
    if config.subset and row.get('split', '') != config.subset:
      continue
    start = _seconds(row['time_start'], config.input, line, 'time_start')
    end = _seconds(row['time_end'], config.input, line, 'time_end')
    if not row['label'] or not row['youtube_id'] or start is None or end is None:
      raise ManifestError(f'{config.input} line {line}: empty label, youtube_id or time')
    media_id = f'{row["youtube_id"]}_{round(start):06d}_{round(end):06d}'
    if media_id in videos:
      entries.append(VideoEntry(path=videos[media_id], label=row['label'], media_id=media_id))
    elif row['youtube_id'] in videos:
      entries.append(VideoEntry(path=videos[row['youtube_id']], label=row['label'], media_id=media_id,
                                start=start, end=end))
    else:
      missing.append(MissingVideo(media_id=media_id, path=os.path.join(config.video_root, media_id + '.mp4'),
                                  reason=f'missing: neither {media_id}.* nor {row["youtube_id"]}.* is under '
                                  f'{config.video_root}'))
  class_names = sorted({row['label'] for _, row in rows})
  return entries, class_names, missing


def read_manifest(config: SourceConfig) -> Manifest:
  """The videos and class names that `config` describes.

  Raises:
    ManifestError: a split file or folder is missing or malformed, or two videos share a media id.
  """
  missing = []
  if config.source == 'csv':
    entries = _read_csv_source(config)
    class_names = sorted({e.label for e in entries})
  elif config.source == 'folder':
    entries, class_names = _read_folder_source(config)
  elif config.source == 'ucf101':
    entries, class_names = _read_ucf101(config)
  elif config.source == 'hmdb51':
    entries, class_names = _read_hmdb51(config)
  else:
    entries, class_names, missing = _read_kinetics(config)
  entries.sort(key=lambda e: e.media_id)
  repeated = sorted({a.media_id for a, b in zip(entries, entries[1:]) if a.media_id == b.media_id})
  if repeated:
    raise ManifestError(f'{config.input}: media ids repeat, so records would collide: {repeated[:5]}')
  return Manifest(entries=entries, class_names=class_names, missing=missing)
