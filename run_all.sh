#!/usr/bin/env bash
# Run the whole workflow: data -> check-data -> folds -> eda -> train (cls, seg; every fold)
# -> tune -> predict -> validate -> score -> show. Finished stages are skipped on a re-run.
#
#   bash run_all.sh                 real data if present or downloadable, else the demo data
#   bash run_all.sh --demo          the embedded demo data set (no Kaggle account needed)
#   bash run_all.sh --kaggle        download the competition with the Kaggle API
#   bash run_all.sh --data DIR      any directory in Kaggle's layout (demo config unless --config)
#   options: --config FILE  --folds K  --from STAGE  --force  --gpus 0,1,...
set -euo pipefail
cd "$(dirname "$0")"

STAGES=(data check-data folds eda train-cls train-seg tune predict validate score show)
usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    echo "stages (for --from): ${STAGES[*]}"
}

mode=auto; data_dir=""; config=""; folds=""; from=""; force=""; gpus=""
while [ $# -gt 0 ]; do
    case "$1" in
        --demo) mode=demo ;;
        --kaggle) mode=kaggle ;;
        --data) data_dir="${2:?--data needs a directory}"; mode=dir; shift ;;
        --config) config="${2:?--config needs a file}"; shift ;;
        --folds) folds="${2:?--folds needs a number}"; shift ;;
        --from) from="${2:?--from needs a stage name}"; shift ;;
        --force) force="--force" ;;
        --gpus) gpus="${2:?--gpus needs a list such as 0,1}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$from" ] && [[ ! " ${STAGES[*]} " =~ " $from " ]]; then
    echo "error: --from $from is not a stage; stages: ${STAGES[*]}" >&2; exit 2
fi
if [ -n "$folds" ] && ! [[ "$folds" =~ ^[0-9]+$ && "$folds" -ge 2 ]]; then
    echo "error: --folds must be an integer of at least 2, got $folds" >&2; exit 2
fi

source scripts/env.sh
echo "== environment"
ensure_environment
SEVERSTAL=(.venv/bin/severstal)

# Choose the data: the config decides the data directory; --data overrides it.
real_dir="data/severstal-steel-defect-detection"
if [ "$mode" = auto ]; then
    if [ -f "$real_dir/train.csv" ] && [ -d "$real_dir/train_images" ]; then
        mode=real
    elif "${SEVERSTAL[@]}" download --credentials-only >/dev/null 2>&1; then
        mode=kaggle
    else
        mode=demo
    fi
fi
case "$mode" in
    real)   config="${config:-configs/default.yaml}"; echo "data: the real competition data already in $real_dir" ;;
    kaggle) config="${config:-configs/default.yaml}"; echo "data: the real competition data, downloaded with your Kaggle credentials" ;;
    demo)   config="${config:-configs/demo.yaml}";    echo "data: the embedded demo data set (no Kaggle data here; bash run_all.sh --kaggle downloads the real one)" ;;
    dir)    config="${config:-configs/demo.yaml}";    echo "data: $data_dir (Kaggle's layout)" ;;
esac
echo "config: $config"

common=(--config "$config")
[ -n "$data_dir" ] && common+=(--data "$data_dir")
[ -n "$folds" ] && common+=(--set "folds.k=$folds")

started=""; [ -z "$from" ] && started=yes
run_stage() {  # run_stage NAME COMMAND...: skip before --from, stop on failure
    local name="$1"; shift
    [ "$name" = "$from" ] && started=yes
    [ -n "$started" ] || { echo "== $name (skipped: before --from $from)"; return 0; }
    echo "== $name"
    local status=0
    "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "run_all.sh: stage '$name' failed (exit $status); fix the error above, then re-run (finished stages are skipped) or use --from $name" >&2
        exit "$status"
    fi
}

config_path() {  # config_path NAME: a path of the experiment (submission, test_images, test_labels, models)
    .venv/bin/python -c 'import sys
from severstal.infra.artifacts import Paths
from severstal.infra.config import load_config
print(getattr(Paths(load_config(sys.argv[2], data=sys.argv[3] or None)), sys.argv[1]))' "$1" "$config" "$data_dir"
}

case "$mode" in
    demo)   run_stage data "${SEVERSTAL[@]}" demo-data --config "$config" ;;
    kaggle|real) run_stage data "${SEVERSTAL[@]}" download --config "$config" ;;
    dir)    run_stage data test -d "$data_dir" ;;
esac
run_stage check-data "${SEVERSTAL[@]}" check-data "${common[@]}"
run_stage folds      "${SEVERSTAL[@]}" folds "${common[@]}" $force
run_stage eda        "${SEVERSTAL[@]}" eda "${common[@]}" $force
if [ -n "$gpus" ]; then
    run_stage train-cls scripts/train_parallel.sh "$gpus" cls "${common[@]}" $force
    run_stage train-seg scripts/train_parallel.sh "$gpus" seg "${common[@]}" $force
else
    run_stage train-cls "${SEVERSTAL[@]}" train --model cls --fold all "${common[@]}" $force
    run_stage train-seg "${SEVERSTAL[@]}" train --model seg --fold all "${common[@]}" $force
fi
run_stage tune       "${SEVERSTAL[@]}" tune "${common[@]}" $force
submission="$(config_path submission)"
test_dir="$(config_path test_images)"
truth="$(config_path test_labels)"
if ! .venv/bin/python -c 'import sys
from severstal.infra.images import image_names
sys.exit(0 if image_names(sys.argv[1]) else 1)' "$test_dir"; then
    echo "== predict, validate, score, show (skipped: no test images in $test_dir; the trained folds and"
    echo "   thresholds are in $(config_path models)/; severstal predict --images DIR predicts any folder)"
    echo "== done"
    exit 0
fi
run_stage predict    "${SEVERSTAL[@]}" predict "${common[@]}" $force
run_stage validate   "${SEVERSTAL[@]}" validate "$submission" --images "$test_dir"
if [ -f "$truth" ]; then
    run_stage score  "${SEVERSTAL[@]}" report "${common[@]}"
    run_stage show   "${SEVERSTAL[@]}" show --best-worst 3 "${common[@]}"
else
    echo "== score, show (skipped: no test_labels.csv, the test truth is not known)"
fi
echo "== done"
