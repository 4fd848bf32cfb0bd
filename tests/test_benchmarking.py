"""Latency figures: warm-up calls are not timed, functions take turns on each input, the spread is robust. Training
FLOPs as MFU counts them. The TV-L1 settings benchmark finds its frames and runs each setting."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import train_benchmark
from benchmarks import tvl1_cpu_settings
from official_d3d import benchmarking
from official_d3d.modeling.layers import folded_conv3d


def test_time_calls_times_each_function_on_each_input_after_the_warm_up():
  calls = []
  timings = benchmarking.time_calls({'a': lambda x: calls.append(('a', x)), 'b': lambda x: calls.append(('b', x))},
                                    [0, 1, 2], warmup=1)
  assert calls == [('a', 0), ('b', 0), ('a', 1), ('b', 1), ('a', 2), ('b', 2)]  # in turns, the first input untimed
  assert set(timings) == {'a', 'b'} and all(len(timing.seconds) == 2 for timing in timings.values())
  with pytest.raises(ValueError, match='none to time'):
    benchmarking.time_calls({'a': print}, [0], warmup=1)


def test_median_and_interquartile_spread_in_milliseconds():
  timing = benchmarking.Timing((0.010, 0.011, 0.012, 0.013, 0.500))  # one call slowed down by another process
  assert timing.median_ms == pytest.approx(12.0)
  assert timing.spread_ms == pytest.approx(2.0)  # 13 ms - 11 ms: the slow call moves neither quartile
  assert benchmarking.Timing((0.004,)).spread_ms == 0.0


def test_machine_description_names_what_figures_depend_on():
  machine = benchmarking.machine_description()
  assert machine['cores'] >= 1 and machine['tensorflow']
  assert set(machine) >= {'cpu', 'instruction_sets', 'gpus', 'XLA_FLAGS', 'ONEDNN_MAX_CPU_ISA'}


def test_step_flops_of_a_convolution_and_its_gradients_match_a_hand_count():
  layer = folded_conv3d.FoldedConv3D(4, (3, 3, 3), strides=(2, 2, 2), padding='same', use_bias=False)
  clips = tf.zeros([1, 4, 6, 6, 2])
  layer.build(clips.shape)

  def step(clips):
    with tf.GradientTape() as tape:
      tape.watch(clips)
      loss = tf.reduce_sum(layer(clips))
    return tape.gradient(loss, [clips, layer.kernel])

  # Forward, gradient to the clips, gradient to the kernel: each 2 x output elements x kernel elements per filter.
  by_hand = 3 * 2 * (2 * 3 * 3 * 4) * (3 * 3 * 3 * 2)
  for convolution in train_benchmark.CONVOLUTIONS:  # folded (2-D ops) and Keras' Conv3D: the same model FLOPs
    with train_benchmark.convolution_op(convolution):
      assert train_benchmark.step_flops(tf.function(step).get_concrete_function(clips)) == by_hand


def test_the_cpu_settings_benchmark_reads_grayscale_frames_at_the_converters_size():
  frames = tvl1_cpu_settings._middle_gray_frames('bikes.mp4', 3)  # pylint: disable=protected-access
  assert frames.shape == (3, 256, 602) and frames.dtype == np.uint8
  assert np.abs(np.diff(frames.astype(int), axis=0)).mean() > 1.0  # consecutive frames of a moving scene


@pytest.mark.slow
def test_the_cpu_settings_benchmark_times_opencv_and_each_setting_in_processes_of_their_own():
  process = subprocess.run([sys.executable, '-m', 'benchmarks.tvl1_cpu_settings', '--fixed_iterations=5',
                            '--settings=1x1,1x2x5'], capture_output=True, text=True, timeout=300, check=True,
                           cwd=pathlib.Path(__file__).parents[1])
  rows = [line.split() for line in process.stdout.splitlines() if line.startswith(('OpenCV ', 'XLA '))]
  assert [row[:4] for row in rows] == [['OpenCV', '1', '1', '1'], ['XLA', '1', '1', '1'], ['XLA', '1', '2', '5']]
  assert all(float(row[-1]) > 0 for row in rows)  # milliseconds an inner iteration


def test_the_cpu_settings_benchmark_refuses_a_check_interval_that_does_not_divide_the_iterations():
  process = subprocess.run([sys.executable, '-m', 'benchmarks.tvl1_cpu_settings', '--settings=1x1x7'],
                           capture_output=True, text=True, timeout=120, cwd=pathlib.Path(__file__).parents[1])
  assert process.returncode == 2 and process.stdout == ''
  assert process.stderr.splitlines()[-1].endswith('error: setting 1x1x7: the check interval must divide the 30 inner '
                                                  'iterations')
