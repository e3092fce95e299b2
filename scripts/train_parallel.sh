#!/usr/bin/env bash
# Train every fold of one model, one fold per GPU at a time, each fold a separate process.
#
#   scripts/train_parallel.sh GPUS MODEL [stage options...]
#   scripts/train_parallel.sh 0,1,2,3 seg --config configs/default.yaml --force
#
# GPUS is a comma-separated list of GPU ids (each fold process sees only its GPU through
# CUDA_VISIBLE_DEVICES); MODEL is cls or seg; the other options (--config, --set, --data,
# --experiment, --force, ...) go to every `severstal train --model MODEL --fold K` unchanged.
# The number of folds k comes from the resolved config (folds.k). Each fold logs to
# logs/<experiment>/<MODEL>-fold<K>.log. The script waits for all folds and exits 1 naming the
# failed folds and their logs. Run it from the repository root (paths in configs are relative
# to it). Environment: SEVERSTAL_COMMAND (default .venv/bin/severstal, else severstal on PATH),
# PYTHON (default .venv/bin/python, else python3), POLL_SECONDS (default 2).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

if [ $# -lt 2 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    usage >&2; exit 2
fi
gpus_text="$1"; model="$2"; shift 2
if ! [[ "$gpus_text" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    echo "error: GPUS must be a comma-separated list of GPU ids such as 0,1,2,3, got '$gpus_text'" >&2; exit 2
fi
if [ "$model" != cls ] && [ "$model" != seg ]; then
    echo "error: MODEL must be cls or seg, got '$model'" >&2; exit 2
fi
for option in "$@"; do
    case "$option" in
        --fold|--fold=*|--model|--model=*)
            echo "error: $option is set by train_parallel.sh (it runs every fold of MODEL); leave it out" >&2; exit 2 ;;
    esac
done
IFS=, read -r -a gpus <<< "$gpus_text"
if [ "$(printf '%s\n' "${gpus[@]}" | sort | uniq -d)" != "" ]; then
    echo "error: GPUS lists a GPU twice: $gpus_text" >&2; exit 2
fi

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -n "${SEVERSTAL_COMMAND:-}" ]; then
    read -r -a severstal <<< "$SEVERSTAL_COMMAND"
elif [ -x .venv/bin/severstal ]; then
    severstal=(.venv/bin/severstal)
else
    severstal=(severstal)
fi
poll="${POLL_SECONDS:-2}"

# k and the experiment name from the config, resolved exactly as the train stage resolves it.
settings="$("$PYTHON" -c 'import argparse, sys
from severstal.infra.commands import add_config_arguments, config_from_args
from severstal.infra.errors import UserError
parser = argparse.ArgumentParser(add_help=False)
add_config_arguments(parser)
arguments, _ = parser.parse_known_args(sys.argv[1:])
try:
    config = config_from_args(arguments, announce=False)
except UserError as error:
    sys.exit(f"error: {error}")
print(config.folds.k, config.experiment)' "$@")"
read -r folds experiment <<< "$settings"
log_dir="logs/$experiment"
mkdir -p "$log_dir"
echo "train_parallel: $model, $folds folds of experiment $experiment on GPU(s) ${gpus[*]}; logs in $log_dir/"

slot_pid=(); slot_fold=()  # per GPU slot: the running fold's process id and number ("" when free)
for index in "${!gpus[@]}"; do slot_pid[index]=""; slot_fold[index]=""; done
failed=(); failed_logs=()

log_of() { echo "$log_dir/$model-fold$1.log"; }

stop_children() {  # on Ctrl-C / kill: stop the fold processes this script started, then exit
    trap - INT TERM
    for pid in "${slot_pid[@]}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${slot_pid[@]}"; do  # exit only once they are gone
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    echo "train_parallel: interrupted; running folds were stopped (re-run to resume them)" >&2
    exit 130
}
trap stop_children INT TERM

reap() {  # reap SLOT: collect a finished fold's exit status
    local index="$1" status=0 fold="${slot_fold[$1]}"
    wait "${slot_pid[$index]}" || status=$?
    if [ "$status" -eq 0 ]; then
        echo "train_parallel: $model fold $fold finished on GPU ${gpus[$index]}"
    else
        echo "train_parallel: $model fold $fold FAILED (exit $status) on GPU ${gpus[$index]}; log: $(log_of "$fold")" >&2
        failed+=("$fold"); failed_logs+=("$(log_of "$fold")")
    fi
    slot_pid[index]=""; slot_fold[index]=""
}

reap_finished() {  # reap every slot whose fold process has ended (runs in this shell: updates the arrays)
    local index
    for index in "${!gpus[@]}"; do
        if [ -n "${slot_pid[$index]}" ] && ! kill -0 "${slot_pid[$index]}" 2>/dev/null; then
            reap "$index"
        fi
    done
}

busy() { local pid; for pid in "${slot_pid[@]}"; do [ -n "$pid" ] && return 0; done; return 1; }

for ((fold = 0; fold < folds; fold++)); do
    while true; do  # wait for a free GPU
        reap_finished
        slot=""
        for index in "${!gpus[@]}"; do
            if [ -z "${slot_pid[$index]}" ]; then slot="$index"; break; fi
        done
        [ -n "$slot" ] && break
        sleep "$poll"
    done
    log="$(log_of "$fold")"
    echo "train_parallel: $model fold $fold started on GPU ${gpus[$slot]}; log: $log"
    CUDA_VISIBLE_DEVICES="${gpus[$slot]}" "${severstal[@]}" train --model "$model" --fold "$fold" "$@" \
        > "$log" 2>&1 < /dev/null &
    slot_pid[slot]=$!; slot_fold[slot]=$fold
done
while busy; do
    reap_finished
    if busy; then sleep "$poll"; fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    {
        echo "train_parallel: ${#failed[@]} of $folds $model fold(s) failed: ${failed[*]}"
        for index in "${!failed[@]}"; do
            echo "  fold ${failed[$index]}: ${failed_logs[$index]} (last lines below)"
            tail -n 5 "${failed_logs[$index]}" | sed 's/^/    | /'
        done
        echo "Fix the cause, then re-run the same command: finished folds are skipped by the train stage."
    } >&2
    exit 1
fi
echo "train_parallel: all $folds $model folds finished"
