#!/usr/bin/env bash
# Measure this project on your GPU machine and print one table naming the device:
#   1. the smoke run (bash run_all.sh --smoke: every stage of the real recipe at full resolution,
#      in mixed precision on a GPU) and its predict rate;
#   2. training steps per second of the default U-Net and classifier (configs/default.yaml), fed by
#      the real input pipeline and from batches held in memory (bench/bench_pipeline.py --measure training);
#   3. the input pipeline alone on all cores, in crops per second (bench/bench_pipeline.py).
#
#   bash bench/gpu_check.sh           the full check (under 8 minutes on a GPU)
#   bash bench/gpu_check.sh --quick   a few steps at the test suite's smoke size (a few minutes on a CPU)
#
# Without a GPU it says so and measures the CPU in float32 (steps at batch 2): those figures say
# that the script works, not how fast a GPU is. The figures go to reports/gpu_check/results.json;
# please send them with the table (README, "GPU figures").
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
case "${1:-}" in
    --quick) quick=yes ;;
    "") ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (use --quick or nothing)" >&2; exit 2 ;;
esac

source scripts/env.sh
ensure_environment >/dev/null
PY=.venv/bin/python
out=reports/gpu_check
rm -rf "$out"
mkdir -p "$out"
log() { echo "== $*"; }
elapsed() { echo $(( $(date +%s) - $1 )); }

# GPUs TensorFlow sees; without nvidia-smi (no NVIDIA driver) none, and env.sh installed the CPU build anyway
gpus=0
if command -v nvidia-smi >/dev/null 2>&1 || [ "${SEVERSTAL_TENSORFLOW:-}" = gpu ]; then
    gpus=$("$PY" -c 'import os; os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null) || gpus=0
    gpus=${gpus:-0}  # TensorFlow failed to start: the smoke run below says why
fi
offline=(--set seg.encoder_weights=none --set cls.encoder_weights=none)  # the speed does not depend on the weights
if [ "$gpus" -gt 0 ]; then
    precision=(--set hardware.mixed_precision=true)
    steps=30; repeats=3; batches=40; warm=3; batch=()
    smoke_sizes=(--set smoke.test_images=64)
    [ -n "$quick" ] && { steps=5; repeats=1; batches=10; smoke_sizes=(--set smoke.train_images=4 --set smoke.test_images=2 --set cls.epochs=1 --set seg.epochs=1); }
    echo "GPU check on $gpus GPU(s), mixed precision${quick:+ (quick)}"
else
    precision=(--set hardware.mixed_precision=false --set hardware.require_gpu=false)
    steps=3; repeats=1; batches=3; warm=1; batch=(--set seg.batch_size=2 --set cls.batch_size=2)
    # one flip: on a CPU the full-size networks' passes are most of the smoke run (the tests' smoke run has two)
    smoke_sizes=(--set smoke.train_images=4 --set smoke.test_images=2 --set cls.epochs=1 --set seg.epochs=1
                 --set "inference.tta=[none]")
    echo "GPU check: no GPU is visible to TensorFlow, so this measures the CPU in float32 at the test suite's smoke size"
    echo "(no flips) and three timed steps at batch 2 (it shows that the script works; GPU figures need a GPU)"
    quick=yes
fi

# The source data: the real competition data when present, else a small demo set made here.
source_dir=data/severstal-steel-defect-detection
if [ ! -f "$source_dir/train.csv" ]; then
    source_dir="$out/gpu-check"
    if [ -n "$quick" ]; then counts=(--train 8 --test 6); else counts=(--train 64 --test 64); fi
    "$PY" -m severstal demo-data --config configs/demo.yaml --out "$source_dir" "${counts[@]}" >/dev/null 2>&1
fi

log "smoke run (bash run_all.sh --smoke on $source_dir)"
started=$(date +%s)
bash run_all.sh --smoke --force --data "$source_dir" "${precision[@]}" "${smoke_sizes[@]}" > "$out/smoke.log" 2>&1 || {
    echo "error: the smoke run failed; its log: $out/smoke.log" >&2; tail -n 20 "$out/smoke.log" >&2; exit 1; }
smoke_seconds=$(elapsed "$started")
device=$(grep -m1 "^TensorFlow .* on " "$out/smoke.log" || echo "unknown device")
# predict prints "12.3 images/s (...)", or "3.6 s/image (...)" below one image a second
predict_rate=$(grep -m1 -E "^[0-9.]+ (images/s|s/image) \(" "$out/smoke.log" \
    | awk '{ print ($2 == "s/image" ? sprintf("%.2f", 1 / $1) : $1) }' || true)
predict_rate=${predict_rate:-n/a}
echo "smoke run: ${smoke_seconds} s; predict ${predict_rate} images/s; $device"

bench_data="$source_dir"
[ -n "$quick" ] && bench_data="data/smoke/$(basename "$source_dir")"  # the smoke copy: enough images for batch 2
log "training steps per second of the U-Net and the classifier, real pipeline vs in memory"
started=$(date +%s)
"$PY" bench/bench_pipeline.py --config configs/default.yaml --data "$bench_data" --measure training --model both \
    --steps "$steps" --warm "$warm" --repeats "$repeats" "${precision[@]}" "${offline[@]}" "${batch[@]}" \
    --out "$out/training.json" 2>"$out/training.err" | grep "of in memory" || {
    echo "error: the training measurement failed: $out/training.err" >&2; tail -n 5 "$out/training.err" >&2; exit 1; }
echo "($(elapsed "$started") s)"

log "input pipeline alone, all cores"
started=$(date +%s)
"$PY" bench/bench_pipeline.py --config configs/default.yaml --data "$source_dir" --cores all --batches "$batches" \
    --repeats "$repeats" "${offline[@]}" "${batch[@]}" --out "$out/pipeline.json" 2>"$out/pipeline.err" | grep "cores:" || {
    echo "error: the pipeline measurement failed: $out/pipeline.err" >&2; tail -n 5 "$out/pipeline.err" >&2; exit 1; }
echo "($(elapsed "$started") s)"

"$PY" - "$out" "$device" "$smoke_seconds" "$predict_rate" "${quick:-full}" <<'EOF'
import json
import sys
from pathlib import Path

out, device, smoke_seconds, predict_rate, mode = sys.argv[1:]
out = Path(out)
training = json.loads((out / "training.json").read_text())
pipeline = json.loads((out / "pipeline.json").read_text())
rows = [("device", device), ("mode", "quick" if mode == "yes" else "full"), ("smoke run", f"{smoke_seconds} s"),
        ("predict (smoke run)", f"{predict_rate} images/s")]
for kind, name in (("seg", "U-Net"), ("cls", "classifier")):
    t = training[kind]
    crop = "x".join(map(str, t["crop"])) if t["crop"] else "whole image"
    rows.append((f"{name} training, batch {t['batch_size']}, {crop}: in memory",
                 f"{t['in_memory_steps_per_second']:.2f} steps/s = {t['in_memory_steps_per_second'] * t['batch_size']:.0f} crops/s"))
    rows.append((f"{name} training: real pipeline",
                 f"{t['pipeline_steps_per_second']:.2f} steps/s ({100 * t['pipeline_fraction_of_in_memory']:.0f}% of in memory)"))
for kind, name in (("seg", "segmenter"), ("cls", "classifier")):
    rows.append((f"pipeline alone, {name} crops, all cores", f"{pipeline[f'{kind}_all_cores_crops_per_second']:.0f} crops/s"))
results = {"rows": dict(rows), "training": training, "pipeline": pipeline}
(out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
print("\n| measure | value |\n|---|---|")
for name, value in rows:
    print(f"| {name} | {value} |")
print(f"\nwritten to {out / 'results.json'}")
EOF
echo "gpu check done in $SECONDS s"
