"""Decoding real and synthetic videos: frame rate resampling, clip cuts, resizing, and clear errors for bad files."""

import cv2
import numpy as np
import pytest

import synthetic_videos
from d3d_core import video_reader


def _all_frames_opencv(path):
  capture = cv2.VideoCapture(str(path))
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      return np.stack(frames)
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_real_video_at_its_own_rate_keeps_every_frame_and_resizes_the_short_side(bikes_video):
  video = video_reader.read_video(str(bikes_video), video_reader.DecodeConfig(fps=25, short_side=64))

  assert video.frames.shape == (250, 64, 151, 3)  # 640x272 -> short side 64, aspect kept
  assert video.frames.dtype == np.uint8
  np.testing.assert_array_equal(video.timestamps_us, np.arange(250) * 40_000)
  reference = cv2.resize(_all_frames_opencv(bikes_video)[100], (151, 64), interpolation=cv2.INTER_AREA)
  np.testing.assert_array_equal(video.frames[100], reference)


def test_resampling_picks_the_last_frame_at_or_before_each_time(tmp_path):
  path = synthetic_videos.write_video(tmp_path / 'numbered.avi', synthetic_videos.numbered_frames(20), fps=25)

  slower = video_reader.read_video(str(path), video_reader.DecodeConfig(fps=10, short_side=0))
  faster = video_reader.read_video(str(path), video_reader.DecodeConfig(fps=50, short_side=0))

  # 20 frames at 25 fps last 0.8 s: 8 frames at 10 fps; output time k/10 s shows source frame floor(2.5 k).
  assert [int(f.mean()) // 10 for f in slower.frames] == [0, 2, 5, 7, 10, 12, 15, 17]
  np.testing.assert_array_equal(slower.timestamps_us, np.arange(8) * 100_000)
  assert [int(f.mean()) // 10 for f in faster.frames] == [k // 2 for k in range(40)]


def test_clip_cut_and_frame_cap(bikes_video):
  config = video_reader.DecodeConfig(fps=25, short_side=48)
  clip = video_reader.read_video(str(bikes_video), config, start=2.0, end=3.0)
  np.testing.assert_array_equal(clip.timestamps_us, 2_000_000 + np.arange(25) * 40_000)

  capped = video_reader.read_video(str(bikes_video), video_reader.DecodeConfig(fps=25, short_side=48, max_frames=6),
                                   start=2.0)
  np.testing.assert_array_equal(capped.frames, clip.frames[:6])


def test_upscaling_short_side_and_bunny_aspect(bunny_video):
  video = video_reader.read_video(str(bunny_video), video_reader.DecodeConfig(short_side=64, max_frames=3))
  assert video.frames.shape == (3, 64, 114, 3)  # 1280x720
  assert video_reader.resized_shape(48, 64, 96) == (96, 128)


@pytest.mark.parametrize('kind', ['missing', 'empty', 'truncated', 'random', 'text', 'one_frame'])
def test_bad_inputs_raise_with_the_file_and_reason(tmp_path, bikes_video, kind):
  path, reason = synthetic_videos.write_bad_inputs(tmp_path, bikes_video)[kind]
  with pytest.raises(video_reader.VideoDecodeError, match=reason) as error:
    video_reader.read_video(str(path), video_reader.DecodeConfig(short_side=32))
  assert str(path) in str(error.value)


def test_truncated_stream_that_still_opens_is_reported(tmp_path):
  path = synthetic_videos.write_video(tmp_path / 'whole.avi', synthetic_videos.translating_texture(30, 48, 64, 1, 0))
  data = path.read_bytes()
  cut = tmp_path / 'cut.avi'
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(video_reader.VideoDecodeError, match=r'truncated or corrupt: decoded \d+ of the 30 frames'):
    video_reader.read_video(str(cut), video_reader.DecodeConfig(short_side=0))
  # The start of a cut file is still usable when only that part is asked for.
  assert len(video_reader.read_video(str(cut), video_reader.DecodeConfig(short_side=0, max_frames=5)).frames) == 5


def test_directory_and_empty_range_are_reported(tmp_path, bikes_video):
  with pytest.raises(video_reader.VideoDecodeError, match='is a directory'):
    video_reader.read_video(str(tmp_path), video_reader.DecodeConfig())
  with pytest.raises(video_reader.VideoDecodeError, match='0 frame'):
    video_reader.read_video(str(bikes_video), video_reader.DecodeConfig(short_side=32), start=20.0, end=30.0)


def test_decode_config_validation():
  with pytest.raises(ValueError, match='fps'):
    video_reader.DecodeConfig(fps=0)
  with pytest.raises(ValueError, match='short_side'):
    video_reader.DecodeConfig(short_side=-1)
