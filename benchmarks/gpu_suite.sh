#!/usr/bin/env bash
# The GPU figures of issue 19 in one call of under 8 minutes:
#   1. TensorFlow TV-L1 at 340x256, OpenCV's defaults, batch 8, 32 and 128: pairs/s, compile time, and where the time
#      goes (stopping rule, its host synchronisation, median filter);
#   2. S3D-G training steps at 64x224x224, batch 8: flow, RGB and D3D, bfloat16 and float32, XLA on and off, folded
#      and plain Conv3D: clips/s and model FLOPs utilisation;
#   3. the input pipeline's clips/s per core of this machine, and the cores that part 2's fastest steps would need.
#
#   bash benchmarks/gpu_suite.sh [--tiny] [OUTPUT_DIR]      # OUTPUT_DIR: default $OUT, else gpu_results
#
# Each part runs under its own time limit (FLOW_S, TRAIN_S, INPUT_S seconds; 130 + 240 + 75 by default) and writes
# OUTPUT_DIR/<part>.log; summary.txt gathers each part's outcome and tables as it ends, so a part that runs out of
# time costs only itself. --tiny runs the same code paths at tiny sizes on the CPU, in about 3 minutes on 2 cores:
# a check of the suite, whose figures mean nothing. Python: $PYTHON, else .venv/bin/python where present, else
# python3, with requirements.txt installed (nothing is installed here: the GPU machine may be offline).
set -euo pipefail

tiny=0
if [[ "${1:-}" == --tiny ]]; then
  tiny=1
  shift
fi
out=${1:-${OUT:-gpu_results}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
summary=$out/summary.txt
suite_start=$SECONDS

{
  echo "gpu_suite.sh$([[ $tiny == 1 ]] && echo ' --tiny') $out, $(date -u '+%Y-%m-%d %H:%M UTC')," \
    "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv,noheader
  fi
} | tee "$summary"

# Everything the parts import, checked before any time is spent.
if ! "$PYTHON" - > "$out/environment.txt" 2>&1 <<'EOF'
import os
import absl, cv2, keras, skvideo, tensorflow as tf
cv2.optflow.DualTVL1OpticalFlow_create  # the contrib build of OpenCV
gpus = tf.config.list_physical_devices('GPU')
names = [tf.config.experimental.get_device_details(gpu).get('device_name', gpu.name) for gpu in gpus]
print(f'python ok: TensorFlow {tf.__version__}, Keras {keras.__version__}, OpenCV {cv2.__version__}, '
      f'{os.cpu_count()} CPU cores, GPUs {names}')
print(f'gpus={len(gpus)}')
EOF
then
  tail -n 5 "$out/environment.txt" | tee -a "$summary"
  echo "$PYTHON lacks what the benchmarks import (tensorflow, keras, opencv-contrib-python-headless, scikit-video," \
    "absl-py): install requirements.txt, or set PYTHON to an interpreter that has them." | tee -a "$summary"
  exit 2
fi
grep '^python ok' "$out/environment.txt" | tee -a "$summary"
gpus=$(sed -n 's/^gpus=//p' "$out/environment.txt")
if [[ $tiny == 0 && $gpus == 0 ]]; then
  echo "No GPU visible to TensorFlow: the parts run on the CPU at full size within their limits; not GPU figures." \
    | tee -a "$summary"
fi

# run_part NAME SECONDS COMMAND...: runs COMMAND under its limit into NAME.log, then adds the log to the summary
# without TensorFlow's own log lines: what the benchmark printed, its progress lines if its report never came.
run_part() {
  local name=$1 seconds=$2 start=$SECONDS status=0 outcome=finished
  shift 2
  echo -e "\n== $name, limit $seconds s: $*" | tee -a "$summary"
  timeout --kill-after=5 "$seconds" "$@" > "$out/$name.log" 2>&1 || status=$?
  case $status in
    0) ;;
    124 | 137) outcome="stopped at its $seconds s limit" ;;
    *) outcome="failed, exit status $status" ;;
  esac
  echo "$name: $outcome after $((SECONDS - start)) s" | tee -a "$summary"
  grep -Ev '^[IWEF][0-9]{4} |^WARNING: All log messages' "$out/$name.log" >> "$summary" || true
}

if [[ $tiny == 1 ]]; then
  flow_args=(--size=80x64 --opencv_pairs=1 --processes=2 --cpu_batch_sizes=2 --gpu_batch_sizes=2 --repeats=1)
  # XLA off: on a CPU it compiles each model for minutes. Two streams, so that both precisions are reached.
  train_args=(--nofull_size --streams=rgb,d3d --precisions=mixed_bfloat16,float32 --xla=off --steps=2
              --warmup_steps=0 --time_budget_s=50)
  input_args=(--settings=small --num_frames=4 --crop_size=16 --seconds=1)
  flow_s=${FLOW_S:-100} train_s=${TRAIN_S:-90} input_s=${INPUT_S:-60}
else
  # No CPU TV-L1 where a GPU is: its compilation would cost part 1 a good part of its time.
  cpu_batch_sizes=''
  [[ $gpus == 0 ]] && cpu_batch_sizes=4
  flow_args=(--opencv_pairs=2 --gpu_batch_sizes=8,32,128 --repeats=2 --cpu_batch_sizes=$cpu_batch_sizes)
  # No case starts in the last 75 s of part 2: room for one full-size case to compile (assumed under a minute) and run.
  train_args=(--full_size --streams=flow,rgb,d3d --batch_size=8 --precisions=mixed_bfloat16,float32 --xla=on,off
              --steps=10 --warmup_steps=1 --time_budget_s=$((${TRAIN_S:-240} - 75)))
  input_args=(--settings=paper --seconds=8)
  flow_s=${FLOW_S:-130} train_s=${TRAIN_S:-240} input_s=${INPUT_S:-75}
fi

run_part 1_flow "$flow_s" "$PYTHON" -m benchmarks.flow_benchmark --breakdown "${flow_args[@]}"

run_part 2_train "$train_s" "$PYTHON" benchmarks/train_benchmark.py --convolutions=folded,conv3d \
  --results_json="$out/2_train.json" "${train_args[@]}"

# What training consumes: the fastest measured step of D3D (RGB + flow clips) and of RGB.
consumed=$("$PYTHON" - "$out/2_train.json" 2> /dev/null <<'EOF' || true
import json, sys
cases = [case for case in json.load(open(sys.argv[1])) if not case['error']]
fastest = {stream: max((c['clips_per_second'] for c in cases if c['stream'] == stream), default=0)
           for stream in ('d3d', 'rgb')}
print(','.join(f'{modalities}={fastest[stream]:.2f}' for stream, modalities in (('d3d', 'rgb+flow'), ('rgb', 'rgb'))
               if fastest[stream]))
EOF
)
run_part 3_input "$input_s" "$PYTHON" benchmarks/input_benchmark.py --parts=throughput \
  --training_clips_per_second="$consumed" "${input_args[@]}"

echo -e "\nsuite: $((SECONDS - suite_start)) s in all; logs in $out" | tee -a "$summary"
echo -e "\n======== summary.txt ========"
cat "$summary"
