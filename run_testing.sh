#!/usr/bin/env bash
# Regression guard: run every env x algorithm combination (function) or every published performance bar
# (performance), at most -p at once, then fail on any crash and on any missed bar.
#
#   ./run_testing.sh -t function|performance -p <max processes> [-g <gpu ids, e.g. 0,1>] [-m <min free GPU MB>]
#                    [-s <seconds between launches>] [-k <test name filter>] [-c <prepared command file>]
#
# Defaults as ideas_deep_rl2: -t performance, -p 6 (capped to the number of cores), -m 2500; -s 15 when GPUs are
# used (time for a new process to claim GPU memory before the next launch checks it), 0 otherwise.
# Results go to testing/<timestamp>/ (override with RUN_TESTING_DIR): runs/, logs/<i>.log|.rc|.time, mlflow.db.
set -uo pipefail
cd "$(dirname "$0")"

type=performance; procs=6; gpus=""; min_free_mb=2500; sleep_s=""; filter=""; cmd_file=""
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while getopts "t:p:g:m:s:k:c:h" opt; do
    case "$opt" in
        t) type=$OPTARG ;;
        p) procs=$OPTARG ;;
        g) gpus=$(echo "$OPTARG" | tr -d '()[] ') ;;
        m) min_free_mb=$OPTARG ;;
        s) sleep_s=$OPTARG ;;
        k) filter=$OPTARG ;;
        c) cmd_file=$OPTARG ;;
        *) usage ;;
    esac
done
if [[ "$type" != "function" && "$type" != "performance" ]]; then
    echo "error: -t: unknown value '$type' (allowed: function, performance)" >&2; exit 2
fi
if ! [[ "$procs" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: -p: must be a positive integer, got '$procs'" >&2; exit 2
fi
cores=$(nproc)
if (( procs > cores )); then
    echo "note: -p $procs capped to the $cores cores of this machine"; procs=$cores
fi
if [[ -n "$gpus" ]] && ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then
    echo "note: no GPU on this machine: -g and -m are ignored"; gpus=""
fi
[[ -z "$sleep_s" ]] && { [[ -n "$gpus" ]] && sleep_s=15 || sleep_s=0; }

python=${PYTHON:-}
[[ -z "$python" ]] && { [[ -x .venv/bin/python ]] && python=.venv/bin/python || python=python3; }
# absolute, but not through the venv's symlink (that would leave the venv)
if [[ "$python" == */* ]]; then python=$(realpath -s "$python"); else python=$(command -v "$python"); fi
root=$(realpath -m "${RUN_TESTING_DIR:-testing/$(date +%Y-%m-%d_%H-%M-%S)}")
logs="$root/logs"
mkdir -p "$logs"

if [[ -z "$cmd_file" ]]; then
    cmd_file="$root/test_cmds.txt"
    "$python" -m experiment.generate_testing_commands -t "$type" -k "$filter" --root "$root" --out "$cmd_file" \
        --python "$python" || exit 2
    cp "$cmd_file" test_cmds.txt
fi
mapfile -t commands < <(grep -v '^[[:space:]]*$' "$cmd_file")
echo "running ${#commands[@]} commands, at most $procs at once; logs in $logs"

free_gpu() {  # prints a GPU id from $gpus with at least $min_free_mb MB free, or nothing
    local id free
    for id in ${gpus//,/ }; do
        free=$(nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits -i "$id" 2>/dev/null | head -1)
        if [[ -n "$free" ]] && (( free >= min_free_mb )); then echo "$id"; return; fi
    done
}

started=$(date +%s)
for i in "${!commands[@]}"; do
    while (( $(jobs -rp | wc -l) >= procs )); do wait -n; done
    device_env=""
    if [[ -n "$gpus" ]]; then
        gpu=""
        while [[ -z "$gpu" ]]; do gpu=$(free_gpu); [[ -z "$gpu" ]] && sleep 5; done
        device_env="CUDA_VISIBLE_DEVICES=$gpu"
    fi
    (
        t0=$(date +%s%N)
        env $device_env bash -c "${commands[$i]}" > "$logs/$i.log" 2>&1
        echo $? > "$logs/$i.rc"
        echo $(( ($(date +%s%N) - t0) / 1000000 )) | awk '{ print $1 / 1000 }' > "$logs/$i.time"
    ) &
    (( sleep_s > 0 )) && sleep "$sleep_s"
done
wait
echo "all commands finished after $(( $(date +%s) - started )) s"

json="${cmd_file%.txt}.json"
status=0
if [[ -f "$json" ]]; then
    table=""; [[ "$type" == "function" ]] && table="--table"
    "$python" -m experiment.check_error_logs --commands "$json" --logs "$logs" $table || status=1
    if [[ "$type" == "performance" ]]; then
        "$python" -m experiment.validate_performance_testing --commands "$json" --logs "$logs" \
            --tracking-uri "sqlite:///$root/mlflow.db" || status=1
    fi
else  # a hand-made command file: judge by exit codes alone
    for i in "${!commands[@]}"; do
        rc=$(cat "$logs/$i.rc" 2>/dev/null || echo missing)
        if [[ "$rc" != "0" ]]; then
            echo "--- FAILED command $i (exit $rc): ${commands[$i]}"; tail -n 15 "$logs/$i.log"; status=1
        fi
    done
fi
exit $status
