"""Reading video lists from the split formats of UCF-101, HMDB-51, Kinetics, CSV lists and class folders."""

import pytest

from tfrecord_tools import manifests


def _touch(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b'')
  return path


def test_csv_resolves_relative_paths_and_reads_optional_times(tmp_path):
  videos = tmp_path / 'videos'
  absolute = tmp_path / 'elsewhere' / 'c.mp4'
  (tmp_path / 'list.csv').write_text(
      'path,label,start,end\n'
      'walk/a.mp4,walk,,\n'
      f'{absolute},run,1.5,4\n'
      'b.avi,run,,\n')
  manifest = manifests.read_manifest(manifests.SourceConfig(
      source='csv', input=str(tmp_path / 'list.csv'), video_root=str(videos)))

  assert manifest.class_names == ['run', 'walk']
  by_id = {e.media_id: e for e in manifest.entries}
  assert by_id['walk/a'] == manifests.VideoEntry(path=str(videos / 'walk/a.mp4'), label='walk', media_id='walk/a')
  assert by_id['b'].path == str(videos / 'b.avi')
  clip = by_id[f'{str(absolute)[:-4]}_1.500_4.000']
  assert (clip.path, clip.start, clip.end) == (str(absolute), 1.5, 4.0)
  assert [e.media_id for e in manifest.entries] == sorted(by_id)


def test_csv_without_video_root_resolves_against_its_own_folder(tmp_path):
  (tmp_path / 'list.csv').write_text('path,label\nx.mp4,a\n')
  manifest = manifests.read_manifest(manifests.SourceConfig(source='csv', input=str(tmp_path / 'list.csv')))
  assert manifest.entries[0].path == str(tmp_path / 'x.mp4')


@pytest.mark.parametrize('text, message', [
    ('file,class\na.mp4,x\n', " line 1: header ['file', 'class'] lacks the columns ['label', 'path']"),
    ('path,label,start\na.mp4,x,1\n\n  \t\n,,\nb.mp4,x,soon\n', " line 6: start 'soon' is not a number of seconds"),
    ('\n\npath,label\na.mp4,x\n   \nb.mp4,\n', ' line 6: empty path or label'),
    ('path,label\na.mp4,x\na.avi,y\n', ": media ids repeat, so records would collide: ['a']"),
])
def test_csv_errors_name_the_file_its_line_and_the_problem(tmp_path, text, message):
  """Line numbers count from 1 at the file's first line, blank lines included, as an editor shows them."""
  path = tmp_path / 'list.csv'
  path.write_text(text)
  with pytest.raises(manifests.ManifestError) as error:
    manifests.read_manifest(manifests.SourceConfig(source='csv', input=str(path)))
  assert str(error.value) == f'{path}{message}'


def test_csv_lines_without_data_are_skipped(tmp_path):
  (tmp_path / 'list.csv').write_text('path , label\r\n\r\n a.mp4 , x \r\n \t \r\n,\r\nb.mp4,y\r\n')
  manifest = manifests.read_manifest(manifests.SourceConfig(source='csv', input=str(tmp_path / 'list.csv')))
  assert [(e.media_id, e.label) for e in manifest.entries] == [('a', 'x'), ('b', 'y')]


@pytest.mark.parametrize('content, message', [
    (None, ': not found'),
    (b'path,label\na.mp4,x\ncaf\xe9.mp4,x\n', ' line 3: not UTF-8 text (byte 0xe9)'),
    (b'', ': empty; expected a header line with the columns'),
])
def test_an_unreadable_csv_is_named_with_its_problem(tmp_path, content, message):
  path = tmp_path / 'list.csv'
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(manifests.ManifestError) as error:
    manifests.read_manifest(manifests.SourceConfig(source='csv', input=str(path)))
  assert str(error.value).startswith(f'{path}{message}')


def test_folder_source_uses_sorted_class_folders_and_only_video_files(tmp_path):
  for relative in ('walk/w1.mp4', 'run/r2.avi', 'run/r1.MKV', 'run/notes.txt', 'run/.hidden.mp4', 'jump/j.webm'):
    _touch(tmp_path / relative)
  (tmp_path / 'README.md').write_text('not a class')

  manifest = manifests.read_manifest(manifests.SourceConfig(source='folder', input=str(tmp_path)))

  assert manifest.class_names == ['jump', 'run', 'walk']
  assert [(e.media_id, e.label) for e in manifest.entries] == [
      ('jump/j', 'jump'), ('run/r1', 'run'), ('run/r2', 'run'), ('walk/w1', 'walk')]
  assert manifest.entries[1].path == str(tmp_path / 'run' / 'r1.MKV')


@pytest.fixture()
def ucf101_lists(tmp_path):
  """The official split-file layout, with Windows line endings as the originals have."""
  lists = tmp_path / 'ucfTrainTestlist'
  lists.mkdir()
  (lists / 'classInd.txt').write_text('1 ApplyEyeMakeup\r\n2 Archery\r\n3 BabyCrawling\r\n')
  (lists / 'trainlist01.txt').write_text(
      'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nBabyCrawling/v_BabyCrawling_g09_c02.avi 3\r\n')
  (lists / 'testlist01.txt').write_text(
      'Archery/v_Archery_g01_c01.avi\r\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c03.avi\r\n')
  (lists / 'trainlist02.txt').write_text('Archery/v_Archery_g01_c01.avi 1\r\n')
  return lists


def test_ucf101_keeps_classind_order_and_reads_both_subsets(ucf101_lists, tmp_path):
  config = manifests.SourceConfig(source='ucf101', input=str(ucf101_lists), video_root=str(tmp_path / 'UCF-101'),
                                  split=1, subset='train')
  train = manifests.read_manifest(config)
  assert train.class_names == ['ApplyEyeMakeup', 'Archery', 'BabyCrawling']
  assert [(e.media_id, e.label) for e in train.entries] == [
      ('v_ApplyEyeMakeup_g08_c01', 'ApplyEyeMakeup'), ('v_BabyCrawling_g09_c02', 'BabyCrawling')]
  assert train.entries[0].path == str(tmp_path / 'UCF-101' / 'ApplyEyeMakeup' / 'v_ApplyEyeMakeup_g08_c01.avi')

  test = manifests.read_manifest(manifests.SourceConfig(source='ucf101', input=str(ucf101_lists),
                                                        video_root=str(tmp_path), split=1, subset='test'))
  assert [(e.media_id, e.label) for e in test.entries] == [
      ('v_ApplyEyeMakeup_g01_c03', 'ApplyEyeMakeup'), ('v_Archery_g01_c01', 'Archery')]


def test_ucf101_rejects_a_label_that_disagrees_with_the_folder(ucf101_lists, tmp_path):
  config = manifests.SourceConfig(source='ucf101', input=str(ucf101_lists), video_root=str(tmp_path), split=2,
                                  subset='train')
  with pytest.raises(manifests.ManifestError, match=r'trainlist02.txt line 1: label 1 disagrees'):
    manifests.read_manifest(config)


def test_ucf101_missing_split_file_is_named(ucf101_lists, tmp_path):
  config = manifests.SourceConfig(source='ucf101', input=str(ucf101_lists), video_root=str(tmp_path), split=3,
                                  subset='test')
  with pytest.raises(manifests.ManifestError, match='testlist03.txt: not found'):
    manifests.read_manifest(config)


def test_hmdb51_reads_the_chosen_split_and_subset(tmp_path):
  lists = tmp_path / 'splits'
  lists.mkdir()
  (lists / 'brush_hair_test_split1.txt').write_text('April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n'
                                                    'Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 2 \n'
                                                    'brushing_hair_brush_hair_h_cm_np1_le_goo_0.avi 0 \n')
  (lists / 'cartwheel_test_split1.txt').write_text('Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi 2 \n')
  (lists / 'cartwheel_test_split2.txt').write_text('Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi 1 \n')
  config = manifests.SourceConfig(source='hmdb51', input=str(lists), video_root=str(tmp_path / 'hmdb'), split=1,
                                  subset='test')

  manifest = manifests.read_manifest(config)

  assert manifest.class_names == ['brush_hair', 'cartwheel']
  assert [(e.media_id, e.label) for e in manifest.entries] == [
      ('Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0', 'brush_hair'),
      ('Bodenturnen_cartwheel_f_cm_np1_le_med_0', 'cartwheel')]
  assert manifest.entries[1].path == str(tmp_path / 'hmdb/cartwheel/Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi')
  train = manifests.read_manifest(manifests.SourceConfig(source='hmdb51', input=str(lists), video_root='v',
                                                         split=1, subset='train'))
  assert [e.media_id for e in train.entries] == ['April_09_brush_hair_u_nm_np1_ba_goo_0']


def test_kinetics_accepts_both_clip_namings_and_reports_missing_clips(tmp_path):
  (tmp_path / 'train.csv').write_text(
      'label,youtube_id,time_start,time_end,split\n'
      'abseiling,--07WQ2iBlw,1,11,train\n'
      '"passing American football (in game)",-0JIi8VWHos,14,24,train\n'
      'abseiling,-3B32lodo2M,59,69,train\n'
      'zumba,zzz123,0,10,val\n')
  clips = tmp_path / 'clips'
  _touch(clips / '--07WQ2iBlw_000001_000011.mp4')
  _touch(clips / 'passing American football (in game)' / '-0JIi8VWHos.mkv')
  config = manifests.SourceConfig(source='kinetics', input=str(tmp_path / 'train.csv'), video_root=str(clips),
                                  subset='train')

  manifest = manifests.read_manifest(config)

  assert manifest.class_names == ['abseiling', 'passing American football (in game)', 'zumba']
  assert manifest.entries == [
      manifests.VideoEntry(path=str(clips / '--07WQ2iBlw_000001_000011.mp4'), label='abseiling',
                           media_id='--07WQ2iBlw_000001_000011'),
      manifests.VideoEntry(path=str(clips / 'passing American football (in game)' / '-0JIi8VWHos.mkv'),
                           label='passing American football (in game)', media_id='-0JIi8VWHos_000014_000024',
                           start=14.0, end=24.0),
  ]
  assert [(m.media_id, m.reason.split(':')[0]) for m in manifest.missing] == [('-3B32lodo2M_000059_000069',
                                                                              'missing')]
  assert '-3B32lodo2M' in manifest.missing[0].reason


@pytest.mark.parametrize('kwargs, message', [
    (dict(source='ucf101', input='x', video_root='v', subset=''), 'needs subset train or test'),
    (dict(source='hmdb51', input='x', video_root='v', subset='train', split=4), 'splits 1, 2 and 3'),
    (dict(source='folder', input='x', subset='train'), 'has no subsets'),
    (dict(source='kinetics', input='x.csv'), 'needs video_root'),
    (dict(source='youtube', input='x'), 'source must be one of'),
])
def test_source_config_rejects_inconsistent_settings(kwargs, message):
  with pytest.raises(ValueError, match=message):
    manifests.SourceConfig(**kwargs)
