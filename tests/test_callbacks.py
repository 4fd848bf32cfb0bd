"""The training history a run keeps next to its checkpoints survives a kill and a resume."""

import json
import logging

from official_d3d import callbacks


def test_history_keeps_each_loop_with_its_step_and_a_resumed_run_replaces_the_loops_it_repeats(tmp_path):
  path = str(tmp_path / callbacks.HISTORY_FILENAME)
  assert callbacks.read_history(path) == []
  first = callbacks.HistoryLogger(path, steps_per_loop=20)
  first.on_train_begin()
  for epoch in range(3):
    first.on_epoch_end(epoch, {'cls_loss': 2.0 - epoch, 'top_1': 0.1 * epoch})
  first.on_epoch_end(3, {'cls_loss': 0.5, 'val_top_1': 0.25})  # a loop that ended in an evaluation
  assert [entry['step'] for entry in callbacks.read_history(path)] == [20, 40, 60, 80]
  assert callbacks.read_history(path)[-1] == {'step': 80, 'cls_loss': 0.5, 'val_top_1': 0.25}

  # Killed after step 80 was logged but before its checkpoint: the resumed run starts again from step 40.
  resumed = callbacks.HistoryLogger(path, steps_per_loop=20)
  resumed.on_train_begin()
  resumed.on_epoch_end(2, {'cls_loss': 0.75, 'top_1': 0.5})
  history = callbacks.read_history(path)
  assert [entry['step'] for entry in history] == [20, 40, 60]
  assert history[-1] == {'step': 60, 'cls_loss': 0.75, 'top_1': 0.5}
  with open(path) as f:
    assert [json.loads(line)['step'] for line in f] == [20, 40, 60]  # one line per loop, in step order
  assert [p.name for p in tmp_path.iterdir()] == [callbacks.HISTORY_FILENAME]  # no temporary left behind


def test_progress_prints_evaluations_and_a_closing_line_and_logs_every_loop(capsys, caplog):
  caplog.set_level(logging.INFO, logger='absl')  # whatever verbosity a command run earlier in this process left
  progress = callbacks.TrainingProgress('d3d_student', train_steps=8, steps_per_loop=2, initial_step=4)  # resumed
  progress.on_train_begin()
  for epoch in (2, 3):
    progress.on_epoch_begin(epoch)
    for batch in range(2):
      progress.on_train_batch_end(batch, {'loss': 1.5 - epoch / 10, 'top_1': 0.25 * batch, 'cls_loss': 1.0})
    validation = {'val_loss': 1.25, 'val_top_1': 0.75} if epoch == 3 else {}
    progress.on_epoch_end(epoch, {'loss': 1.0, 'top_1': 0.5, **validation})
  progress.on_train_end()
  lines = capsys.readouterr().out.splitlines()  # not a terminal: no bar
  assert lines[0] == 'd3d_student: step 8/8, evaluation: loss 1.250, top-1 0.750'
  assert lines[1].startswith('d3d_student: trained to step 8/8 in ') and lines[1].endswith(': loss 1.200, top-1 0.250')
  assert len(lines) == 2
  logged = [record.getMessage() for record in caplog.records]
  assert logged == ['d3d_student step 6/8: loss 1, top_1 0.5',
                    'd3d_student step 8/8: loss 1, top_1 0.5, val_loss 1.25, val_top_1 0.75']
