"""`tfrecord_tools.inspect_records` on records converted from real videos and a video with known motion."""

import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

import synthetic_videos
from d3d_core import label_map
from d3d_core import schema
from d3d_core import video_reader
from tfrecord_tools import cli
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import inspect_records
from tfrecord_tools import manifests

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHORT_SIDE = 48
NUM_FRAMES = 6
# (height, width) after resizing the short side to 48: bikes 272x640, Big Buck Bunny 720x1280, the synthetic 64x96.
FRAME_SIZES = {'bigbuckbunny': (48, 85), 'bikes': (48, 113), 'moving': (48, 72)}
MOTION_PIXELS = 2 * SHORT_SIDE / 64  # the synthetic content moves 2 px right per frame at 64 px, resized to 48


@pytest.fixture(scope='module')
def records(tmp_path_factory, bikes_video, bunny_video):
  """Three videos of three classes (two real, one moving right), converted into two shards; returns the folder."""
  folder = tmp_path_factory.mktemp('inspect')
  (folder / bikes_video.name).symlink_to(bikes_video)
  (folder / bunny_video.name).symlink_to(bunny_video)
  synthetic_videos.write_video(folder / 'moving.avi', synthetic_videos.translating_texture(NUM_FRAMES, 64, 96, 2, 0))
  csv_path = folder / 'list.csv'
  csv_path.write_text(f'path,label\n{bikes_video.name},bike\n{bunny_video.name},bunny\nmoving.avi,moving\n')
  config = convert_lib.ConversionConfig(
      source=manifests.SourceConfig(source='csv', input=str(csv_path)), output_dir=str(folder / 'records'),
      name='clips', num_shards=2, num_workers=1,
      decode=video_reader.DecodeConfig(short_side=SHORT_SIDE, max_frames=NUM_FRAMES),
      flow=flow_backends.FlowConfig(backend='opencv'))
  report = convert_lib.run_local(config)
  assert report['videos_written'] == 3, report
  return folder / 'records'


def run_inspect(*args):
  return subprocess.run([sys.executable, '-m', 'tfrecord_tools.inspect_records', *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120, check=False)


def error_lines(stderr):
  """The `error:` lines of a command's stderr; a traceback there fails the test, since users must not see one."""
  assert 'Traceback' not in stderr, stderr
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def example_of(records_dir, media_id):
  for path in sorted(records_dir.glob('clips-*.tfrecord')):
    for _, example in inspect_records.read_records(str(path)):
      if example.context.feature[schema.MEDIA_ID].bytes_list.value[0].decode() == media_id:
        return example
  raise KeyError(media_id)


def test_summary_counts_classes_frames_and_sizes(records):
  paths = inspect_records.find_shards(str(records / 'clips-*.tfrecord'))
  class_names = label_map.read_label_map(str(records / 'label_map.txt')) + ['unused']

  summary = inspect_records.summarize(paths, class_names)

  assert len(summary.shards) == 2 and len(summary.videos) == 3
  assert summary.videos_per_class() == [(0, 'bike', 1), (1, 'bunny', 1), (2, 'moving', 1), (3, 'unused', 0)]
  assert summary.frames_per_video() == (NUM_FRAMES, NUM_FRAMES, NUM_FRAMES)
  assert {v.media_id: (v.height, v.width) for v in summary.videos} == FRAME_SIZES
  assert {(v.frame_rate, v.flow_frames, v.flow_format, v.flow_bound) for v in summary.videos} == {
      (25.0, NUM_FRAMES, 'JPEG', schema.DEFAULT_FLOW_BOUND)}
  text = summary.to_text()
  assert 'Records: 3 videos in 2 shard(s)' in text
  assert f'Frames per video: min {NUM_FRAMES}, mean {NUM_FRAMES}.0, max {NUM_FRAMES} (18 in all)' in text
  assert '48x85 (1 video)' in text and 'Flow: in 3 of 3 videos; format JPEG (3 videos); bound +-20 px' in text
  # Without a label map the classes are named by the records' own label strings.
  assert [name for _, name, _ in inspect_records.summarize(paths).videos_per_class()] == ['bike', 'bunny', 'moving']


@pytest.mark.slow
def test_cli_prints_the_summary_and_writes_pictures(records, tmp_path):
  process = run_inspect(f'--records={records}/clips-*.tfrecord', f'--label_map={records}/label_map.txt',
                        f'--output_dir={tmp_path}', '--num_videos=2', '--frames_per_video=3')

  assert process.returncode == 0, process.stderr
  assert 'Records: 3 videos in 2 shard(s)' in process.stdout
  assert '      2  moving  1' in process.stdout
  pictures = sorted(tmp_path.glob('*.png'))
  assert [p.name for p in pictures] == ['000_bigbuckbunny.png', '001_bikes.png']  # the first records, in file order
  for picture_path, media_id in zip(pictures, ('bigbuckbunny', 'bikes')):
    picture = cv2.cvtColor(cv2.imread(str(picture_path)), cv2.COLOR_BGR2RGB)
    height, width = FRAME_SIZES[media_id]
    assert picture.shape == ((3 + 1) * height, 2 * width, 3)  # 3 rows of [RGB | flow], then the legend row
    # The first RGB cell is frame 0 of the record, as TensorFlow decodes it.
    encoded = example_of(records, media_id).feature_lists.feature_list[schema.IMAGE_ENCODED].feature
    frame = tf.io.decode_jpeg(encoded[0].bytes_list.value[0]).numpy()
    assert np.abs(picture[:height, :width].astype(int) - frame).mean() < 2


def test_known_motion_is_drawn_in_its_direction_colour(records):
  picture = inspect_records.render_video(example_of(records, 'moving'), frames_per_video=2)

  height, width = FRAME_SIZES['moving']
  assert picture.shape == (3 * height, 2 * width, 3)
  for row in range(2):
    flow_cell = picture[row * height:(row + 1) * height, width:][8:-8, 8:-8]  # away from the borders
    hsv = cv2.cvtColor(flow_cell.astype(np.float32) / 255, cv2.COLOR_RGB2HSV).reshape(-1, 3)
    hue_from_red = np.minimum(hsv[:, 0], 360 - hsv[:, 0])
    assert np.median(hue_from_red) < 10  # rightward motion is red
    expected_saturation = MOTION_PIXELS / inspect_records.full_colour_magnitude(schema.DEFAULT_FLOW_BOUND)
    assert np.median(hsv[:, 1]) == pytest.approx(expected_saturation, abs=0.08)


@pytest.mark.parametrize('vector, rgb', [
    ((5, 0), (255, 0, 0)),  # right: red
    ((-5, 0), (0, 255, 255)),  # left: cyan
    ((0, 5), (128, 255, 0)),  # down (image y grows downwards): yellow-green
    ((0, -5), (128, 0, 255)),  # up: violet
    ((0, 0), (255, 255, 255)),  # no motion: white
    ((2.5, 0), (255, 128, 128)),  # half the full-colour magnitude: half saturation
    ((50, 0), (255, 0, 0)),  # beyond the full-colour magnitude: saturated, same hue
])
def test_flow_to_color_maps_directions_to_the_colour_wheel(vector, rgb):
  color = inspect_records.flow_to_color(np.array([[vector]], np.float32), full_colour_magnitude=5.0)
  assert color.dtype == np.uint8 and color.shape == (1, 1, 3)
  np.testing.assert_allclose(color[0, 0], rgb, atol=1)


def test_color_wheel_legend():
  legend = inspect_records.color_wheel_legend(41, full_colour_magnitude=5.0)
  assert legend.shape == (41, 41, 3)
  np.testing.assert_array_equal(legend[20, 20], (255, 255, 255))  # centre: zero flow
  np.testing.assert_allclose(legend[20, 40], (255, 0, 0), atol=15)  # right edge: rightward flow, full colour
  np.testing.assert_allclose(legend[0, 20], (128, 0, 255), atol=15)  # top edge: upward flow
  np.testing.assert_array_equal(legend[0, 0], (0, 0, 0))  # outside the disc


def test_picture_frames_spread_over_the_video_but_skip_the_repeated_last_flow():
  assert inspect_records.picture_frame_indices(6, 3) == [0, 2, 4]
  assert inspect_records.picture_frame_indices(100, 4) == [0, 33, 65, 98]
  assert inspect_records.picture_frame_indices(2, 4) == [0]


@pytest.mark.slow
def test_a_glob_that_matches_nothing_is_an_error(tmp_path):
  with pytest.raises(inspect_records.InspectError, match='no file matches'):
    inspect_records.find_shards(str(tmp_path / 'nothing-*.tfrecord'))
  process = run_inspect(f'--records={tmp_path}/nothing-*')
  assert process.returncode == cli.EXIT_ERROR
  assert error_lines(process.stderr) == [f"error: no file matches --records='{tmp_path}/nothing-*'"]


def test_files_that_are_not_tfrecords_of_sequence_examples_are_named(tmp_path, records):
  text_file = tmp_path / 'notes.tfrecord'
  text_file.write_text('These are notes, not records.\n' * 20)
  stub = tmp_path / 'stub.tfrecord'
  stub.write_bytes(b'\x01\x02\x03\x04\x05')
  examples = tmp_path / 'examples.tfrecord'
  with tf.io.TFRecordWriter(str(examples)) as writer:  # a real TFRecord, but of image Examples
    image = tf.io.encode_png(skimage.data.astronaut()).numpy()
    writer.write(tf.train.Example(features=tf.train.Features(feature={
        'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))})).SerializeToString())
  shards = [str(p) for p in sorted(records.glob('clips-*.tfrecord'))]

  for path, problem in ((text_file, 'record 0 at byte 0: not a TFRecord file, or a corrupt one'),
                        (stub, 'record 0 at byte 0: truncated: its last 5 bytes are not a whole record header'),
                        (examples, f'record 0 at byte 0: not a video SequenceExample of tfrecord_tools.convert; it '
                                   f'lacks {schema.MEDIA_ID}')):
    with pytest.raises(inspect_records.InspectError) as error:
      inspect_records.summarize(shards + [str(path)])
    assert str(error.value).startswith(f'{path} {problem}')
    summary = inspect_records.summarize(shards + [str(path)], skip_corrupt=True)
    assert len(summary.videos) == 3 and summary.skipped[str(path)][0].startswith(problem)


def damage_first_record(path):
  """Flips a byte in the data of the first record of a TFRecord file, so that its data fails its checksum."""
  data = bytearray(path.read_bytes())
  data[100] ^= 0xff  # past the 12-byte header
  path.write_bytes(bytes(data))


@pytest.mark.slow
def test_cli_names_a_damaged_record_and_skip_corrupt_counts_it(records, tmp_path):
  shutil.copytree(records, tmp_path / 'records')
  shards = sorted((tmp_path / 'records').glob('clips-*.tfrecord'))
  damage_first_record(shards[1])  # of two: bikes, then moving

  stopped = run_inspect(f'--records={tmp_path}/records/clips-*.tfrecord')
  skipped = run_inspect(f'--records={tmp_path}/records/clips-*.tfrecord', '--skip_corrupt')

  problem = 'record 0 at byte 0: corrupt: its data fails its checksum'
  assert stopped.returncode == cli.EXIT_ERROR
  assert error_lines(stopped.stderr) == [f'error: {shards[1]} {problem} (--skip_corrupt skips damaged records)']
  assert skipped.returncode == cli.EXIT_SKIPPED and not error_lines(skipped.stderr)
  assert skipped.stdout.splitlines()[:3] == ['Records: 2 videos in 2 shard(s)', 'Skipped 1 damaged record(s):',
                                             f'  {shards[1]}: 1 (first: {problem})']
  assert '      2  moving  1' in skipped.stdout  # the records after the damaged one are still read
