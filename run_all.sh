#!/usr/bin/env bash
# Run the whole workflow: data -> check-data -> folds -> eda -> train (cls, seg; every fold)
# -> tune -> predict -> validate -> score -> show. Finished stages are skipped on a re-run.
#
#   bash run_all.sh                 real data if present or downloadable, else the demo data
#   bash run_all.sh --demo          the embedded demo data set (no Kaggle account needed)
#   bash run_all.sh --kaggle        download the competition with the Kaggle API
#   bash run_all.sh --data DIR      a directory in the kaggle, masks or folders layout (README: Your own data;
#                                   demo config, its sizes adapted to the data's, unless --config)
#   bash run_all.sh --smoke         the real recipe at full resolution on 8 + 8 images of the real data
#                                   (else the demo data, or --data DIR), 2 folds x 2 epochs: minutes
#   options: --config FILE  --folds K  --from STAGE  --force  --gpus 0,1,...  --set SECTION.KEY=VALUE
set -euo pipefail
cd "$(dirname "$0")"

STAGES=(data check-data folds eda train-cls train-seg tune predict validate score show)
usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    echo "stages (for --from): ${STAGES[*]}"
}

mode=auto; data_dir=""; config=""; folds=""; from=""; force=""; gpus=""; smoke=""; overrides=()
while [ $# -gt 0 ]; do
    case "$1" in
        --demo) mode=demo ;;
        --smoke) smoke=yes ;;
        --set) overrides+=(--set "${2:?--set needs section.key=value}"); shift ;;
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
    elif [ -z "$smoke" ] && "${SEVERSTAL[@]}" download --credentials-only >/dev/null 2>&1; then  # a smoke run downloads only with --kaggle
        mode=kaggle
    else
        mode=demo
    fi
fi
case "$mode" in
    real)   config="${config:-configs/default.yaml}"; echo "data: the real competition data already in $real_dir" ;;
    kaggle) config="${config:-configs/default.yaml}"; echo "data: the real competition data, downloaded with your Kaggle credentials" ;;
    demo)   config="${config:-configs/demo.yaml}";    echo "data: the embedded demo data set (no Kaggle data here; bash run_all.sh --kaggle downloads the real one)" ;;
    dir)    config="${config:-configs/demo.yaml}";    echo "data: $data_dir (its layout is named by every stage)" ;;
esac
experiment=""; data_config="$config"  # data_config: the config the data stage reads
if [ -n "$smoke" ]; then  # every stage on a copy of a few images of the source data
    case "$mode" in
        dir)  source_dir="$data_dir"; experiment="smoke-$(.venv/bin/python -c 'import sys
from severstal.infra.config import experiment_slug
print(experiment_slug(sys.argv[1]))' "$(basename "$data_dir")")" ;;
        demo) source_dir="data/demo"; experiment=smoke ;;
        *)    source_dir="$real_dir"; experiment=smoke ;;
    esac
    [ "$mode" = demo ] && data_config="configs/demo.yaml"
    config="configs/smoke.yaml"
    data_dir="data/smoke/$(basename "$source_dir")"
    echo "smoke run: the real recipe ($config) on a few images of $source_dir, copied to $data_dir"
fi
echo "config: $config"

common=(--config "$config")
[ -n "$data_dir" ] && common+=(--data "$data_dir")
[ -n "$experiment" ] && common+=(--experiment "$experiment")
[ -n "$folds" ] && common+=(--set "folds.k=$folds")
common+=("${overrides[@]}")

started=""; [ -z "$from" ] && started=yes
durations=()  # "stage N s", printed at the end
stage_times() { [ ${#durations[@]} -gt 0 ] && printf '%s, ' "${durations[@]}" | sed 's/, $//'; }
run_stage() {  # run_stage NAME COMMAND...: skip before --from, stop on failure
    local name="$1"; shift
    [ "$name" = "$from" ] && started=yes
    [ -n "$started" ] || { echo "== $name (skipped: before --from $from)"; return 0; }
    echo "== $name"
    local status=0 began=$SECONDS
    "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "run_all.sh: stage '$name' failed (exit $status); fix the error above, then re-run (finished stages are skipped) or use --from $name" >&2
        exit "$status"
    fi
    durations+=("$name $((SECONDS - began)) s")
}

config_path() {  # config_path NAME: a path of the experiment (submission, test_images, test_labels, models)
    .venv/bin/python -c 'import argparse, sys
from severstal.infra.artifacts import Paths
from severstal.infra.commands import add_config_arguments, config_from_args
parser = argparse.ArgumentParser()
add_config_arguments(parser)
print(getattr(Paths(config_from_args(parser.parse_args(sys.argv[2:]), announce=False)), sys.argv[1]))' "$1" "${common[@]}"
}

get_data() {  # the data stage: the chosen data set, and for --smoke its copy of a few images
    case "$mode" in
        demo)   "${SEVERSTAL[@]}" demo-data --config "$data_config" "${overrides[@]}" ;;
        kaggle|real) "${SEVERSTAL[@]}" download --config "$data_config" "${overrides[@]}" ;;
        dir)    test -d "${source_dir:-$data_dir}" || { echo "error: no directory ${source_dir:-$data_dir}" >&2; return 2; } ;;
    esac
    if [ -n "$smoke" ]; then
        "${SEVERSTAL[@]}" smoke-data "${common[@]}" --source "$source_dir"
    fi
}
run_stage data get_data
layout="$(config_path layout)"  # kaggle, masks or folders (infra.layouts); an error names the three
if [ -n "$smoke" ]; then  # ImageNet encoders where they can be had; else say so and go on without them
    echo "== encoder weights"
    if reason="$("${SEVERSTAL[@]}" weights "${common[@]}" 2>&1)"; then
        echo "encoder weights: the config's are available"
    else
        echo "encoder weights: the config's cannot be had here ($(printf '%s' "$reason" | tail -n 1 | cut -c1-160)...); the smoke run goes on with encoder_weights: none"
        common+=(--set cls.encoder_weights=none --set seg.encoder_weights=none)
    fi
fi
run_stage check-data "${SEVERSTAL[@]}" check-data "${common[@]}"
run_stage folds      "${SEVERSTAL[@]}" folds "${common[@]}" $force
run_stage eda        "${SEVERSTAL[@]}" eda "${common[@]}" $force
if [ -n "$gpus" ]; then
    run_stage train-cls scripts/train_parallel.sh "$gpus" cls "${common[@]}" $force
    [ "$layout" = folders ] || run_stage train-seg scripts/train_parallel.sh "$gpus" seg "${common[@]}" $force
else
    run_stage train-cls "${SEVERSTAL[@]}" train --model cls --fold all "${common[@]}" $force
    if [ "$layout" = folders ]; then
        echo "== train-seg (skipped: the folders layout is classification data, one class per image)"
    else
        run_stage train-seg "${SEVERSTAL[@]}" train --model seg --fold all "${common[@]}" $force
    fi
fi
run_stage tune       "${SEVERSTAL[@]}" tune "${common[@]}" $force
submission="$(config_path submission)"
test_dir="$(config_path test_images)"
truth="$(config_path test_labels)"
if ! .venv/bin/python -c 'import sys
from severstal.infra.images import image_names
from severstal.infra.layouts import folder_images
sys.exit(0 if image_names(sys.argv[1]) or folder_images(sys.argv[1]) else 1)' "$test_dir"; then
    echo "== predict, validate, score, show (skipped: no test images in $test_dir; the trained folds and"
    echo "   thresholds are in $(config_path models)/; severstal predict --images DIR predicts any folder)"
    echo "== done in $SECONDS s ($(stage_times))"
    exit 0
fi
run_stage predict    "${SEVERSTAL[@]}" predict --defects "${common[@]}" $force
if [ "$layout" = kaggle ]; then
    run_stage validate "${SEVERSTAL[@]}" validate "$submission" --images "$test_dir"
else
    echo "== validate (skipped: it checks Kaggle submissions; the $layout layout's predictions are in $(config_path prediction_dir)/)"
    truth="$(config_path test_masks)"
    if [ "$layout" = folders ]; then  # labelled when test/ is sorted into class folders
        truth="$(.venv/bin/python -c 'import sys
from severstal.infra.layouts import class_folders
print(sys.argv[1] if class_folders(sys.argv[1]) else "")' "$test_dir")"
    fi
fi
if [ -n "$truth" ] && [ -e "$truth" ]; then
    run_stage score  "${SEVERSTAL[@]}" report "${common[@]}"
    run_stage show   "${SEVERSTAL[@]}" show --best-worst 3 "${common[@]}"
else
    echo "== score, show (skipped: the test truth is not known: no test_labels.csv, test_masks/ or test/<class name>/ folders)"
fi
if [ -n "$smoke" ]; then
    echo "== smoke run passed: every stage of $config ran at full resolution; trained with $(.venv/bin/python -c 'import json, sys
from pathlib import Path
print(json.loads(Path(sys.argv[1]).read_text()).get("devices", "(devices not recorded)"))' "$(config_path models)/seg/fold0/training.json")"
fi
echo "== done in $SECONDS s ($(stage_times))"
echo "   defects as objects: $(config_path defects); for an inspection line: .venv/bin/severstal export ${common[*]}"
