"""The Beam pipeline (DirectRunner) writes the same records, shard names and report as the local driver."""

import dataclasses

import pytest
import tensorflow as tf

from d3d_core import schema
from d3d_core import video_reader
from tfrecord_tools import beam_pipeline
from tfrecord_tools import convert_lib
from tfrecord_tools import flow_backends
from tfrecord_tools import manifests


def _records_by_media_id(output_dir, name, num_shards):
  records = {}
  for path in convert_lib.shard_paths(str(output_dir), name, num_shards):
    for record in tf.data.TFRecordDataset(path):
      example = tf.train.SequenceExample.FromString(record.numpy())
      media_id = example.context.feature[schema.MEDIA_ID].bytes_list.value[0].decode()
      assert media_id not in records, f'{media_id} written twice'
      records[media_id] = record.numpy()
  return records


@pytest.fixture(scope='module')
def local_run(tmp_path_factory, bikes_video, bunny_video):
  """Three clips of two real videos and one missing video, converted by the local driver; (config, report)."""
  folder = tmp_path_factory.mktemp('beam')
  (folder / 'list.csv').write_text(
      'path,label,start,end\n'
      f'{bikes_video.name},bike,0,1\n'
      f'{bikes_video.name},bike,3,4\n'
      f'{bunny_video.name},bunny,2,3\n'
      'no_such_video.mp4,bunny,,\n')
  config = convert_lib.ConversionConfig(
      source=manifests.SourceConfig(source='csv', input=str(folder / 'list.csv'), video_root=str(bikes_video.parent)),
      output_dir=str(folder / 'local'), name='clips', num_shards=2, num_workers=1,
      decode=video_reader.DecodeConfig(short_side=48, max_frames=5), flow=flow_backends.FlowConfig(backend='opencv'))
  return config, convert_lib.run_local(config)


# The DirectRunner, and its multi-process mode, where the DoFn and the tasks travel pickled to worker processes. That
# mode belongs to FnApiRunner, the Python runner the DirectRunner falls back to when it cannot fetch its Prism runner;
# naming FnApiRunner makes the test run worker processes whether or not this machine can download Prism.
@pytest.mark.slow
@pytest.mark.parametrize('beam_options', [
    '--runner=DirectRunner',
    '--runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=2',
], ids=['direct', 'multi_processing'])
def test_beam_records_equal_the_local_ones(tmp_path, local_run, beam_options):
  local_config, local_report = local_run
  beam_config = dataclasses.replace(local_config, output_dir=str(tmp_path / 'beam'))

  beam_report = beam_pipeline.run_beam(beam_config, beam_options)

  local_records = _records_by_media_id(local_config.output_dir, 'clips', 2)
  beam_records = _records_by_media_id(tmp_path / 'beam', 'clips', 2)
  assert sorted(local_records) == ['bigbuckbunny_2.000_3.000', 'bikes_0.000_1.000', 'bikes_3.000_4.000']
  assert beam_records == local_records
  for key in ('videos_written', 'videos_failed', 'frames_written', 'failures'):
    assert beam_report[key] == local_report[key], key
  assert beam_report['failures'][0]['reason'].endswith('no_such_video.mp4: missing (no such file)')
  assert (tmp_path / 'beam' / 'label_map.txt').read_text() == 'bike\nbunny\n'
