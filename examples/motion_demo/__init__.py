r"""D3D end to end on a generated motion benchmark, in one command and with no download.

  python -m examples.motion_demo --output_dir=demo_output            # about 12 minutes on 2 CPU cores
  python -m examples.motion_demo --output_dir=/tmp/demo --quick      # a smoke run of about 2 minutes
  python -m examples.motion_demo --output_dir=demo_output --seed=0,1,2  # one run per seed, then mean and spread

Steps (`pipeline.py`; each logged, each skipped when its output is already complete, so an interrupted demo resumes):
  1. generate the motion dataset (`tfrecord_tools.make_motion_dataset`): 4 object colours x 2 directions, which
     one frame and flow each tell half of (`--class_set=motions`: 8 directions, which only motion tells apart);
  2. convert train and test to TFRecords with OpenCV TV-L1 flow on all cores (`tfrecord_tools.convert_lib`);
  3. train the flow teacher, 4. the RGB baseline, 5. the D3D student distilled from that teacher
     (`official_d3d.train_lib`, on the recipes `recipes/<network>.flags`);
  6. evaluate the three, and two-stream late fusion (the mean of logits) of teacher and baseline, on the test split;
  7. export the student as a SavedModel (RGB in, no flow anywhere), and the two-stream networks for step 8;
  8. time a clip through the D3D SavedModel, and through the two-stream pipeline: TV-L1 flow of the clip's frames,
     the flow network and the RGB network (`latency.py`);
  9. probe how much motion each network's features hold (`official_d3d.motion_probe`);
  10. print a table (with each model's kind and motion accuracy and the gap closed), write `results.json`,
     `training_curves.png`, `accuracy.png` and `confusion.png`, and the paths to go on from (`report.py`).

Layout of `--output_dir` (with several seeds, one such folder per seed, `seed_<N>`, and `summary.json` above them):
  videos/    the generated videos and their train.csv / test.csv
  records/   train-*.tfrecord, test-*.tfrecord, label_map.txt, conversion reports
  models/    flow_teacher/, rgb_baseline/, d3d_student/ (checkpoints, config.json, eval_metrics.json, history.jsonl,
             logs/)
  export/    d3d_student/1 (the deliverable), and the two-stream networks timed against it
"""
