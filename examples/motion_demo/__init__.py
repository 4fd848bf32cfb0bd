r"""D3D end to end on a generated motion benchmark, in one command and with no download.

  python -m examples.motion_demo --output_dir=demo_output            # about 12 minutes on 2 CPU cores
  python -m examples.motion_demo --output_dir=/tmp/demo --quick      # a smoke run of a couple of minutes
  python -m examples.motion_demo --output_dir=demo_output --seed=0,1,2  # one run per seed, then mean and spread

Steps (`pipeline.py`; each logged, each skipped when its output is already complete, so an interrupted demo resumes):
  1. generate the motion dataset (`tfrecord_tools.make_motion_dataset`): classes that differ by motion only;
  2. convert train and test to TFRecords with OpenCV TV-L1 flow on all cores (`tfrecord_tools.convert_lib`);
  3. train the flow teacher, 4. the RGB baseline, 5. the D3D student distilled from that teacher
     (`official_d3d.train_lib`, on the recipes `recipes/<network>.flags`);
  6. evaluate the three, and two-stream late fusion of teacher and baseline, on the test split;
  7. export the student as a SavedModel (RGB in, no flow anywhere), and the two-stream networks for step 8;
  8. time a clip through the D3D SavedModel, and through the two-stream pipeline: TV-L1 flow of the clip's frames,
     the flow network and the RGB network (`latency.py`);
  9. print a table, write `results.json`, `training_curves.png` and `accuracy.png`, and the paths to go on from
     (`report.py`).

Layout of `--output_dir` (with several seeds, one such folder per seed, `seed_<N>`, and `summary.json` above them):
  videos/    the generated videos and their train.csv / test.csv
  records/   train-*.tfrecord, test-*.tfrecord, label_map.txt, conversion reports
  models/    flow_teacher/, rgb_baseline/, d3d_student/ (checkpoints, config.json, eval_metrics.json, history.jsonl,
             logs/)
  export/    d3d_student/1 (the deliverable), and the two-stream networks timed against it
"""
