#!/usr/bin/env bash
# One short run on a GPU machine (issue 30, part 5): every GPU figure of the package in one table.
#
#   bash benchmarks/device_prepare.sh      # HERE, once: fills .dev/ (wheels, MNIST, the plain loops)
#   bash benchmarks/device.sh              # THERE, the checkout carried with .dev/ (carry [".dev"]), no network
#   DEV=cpu QUICK=1 bash benchmarks/device.sh   # a try of every stage on the CPU, at small sizes
#
# Stages, in this order (STAGES), each under a time budget (`timeout`), all inside TOTAL_S seconds (340 s by
# default, so under 6 minutes with the table; at the package's speed of 2026-12-04 the draws alone take 3.8
# min, and a stage that no longer fits is cut or skipped, marked so in the table):
#   setup         wheels from .dev/whl for what the image lacks (pip --no-index --no-deps --target
#                 /tmp/site), ../shared -> .dev/shared when absent, the card and versions
#   mnist         the MNIST epoch (configs/mnist.yaml), fp32 and bf16, against the plain loop
#                 ../shared/reference/naive_mnist_step.py on the device (benchmarks/speed.py)
#   conv32        the conv step at 32 px, fp32 and bf16, against naive_conv_step.py (benchmarks/conv_speed.py)
#   profile       kernels, GPU-busy ms, syncs, host reads and ops a step (benchmarks/profile_step.py)
#   conv_big      the conv step at 128 px, bf16
#   draws_tests   configs/mnist_fast.yaml, 20 epochs, label draws 1-5 as five processes at once
#                 (benchmarks/mnist.py), with the CUDA tests (pytest -m cuda tests/test_cuda.py) beside them
#   compile       mnist and conv32 again with COMPILE_ARGS (--model.training.compile=reduce-overhead): "n/a (option
#                 missing)" where the CLI refuses it; run on what time is left (STAGES=... picks stages)
# then the table (benchmarks/device_table.py), printed last. Stage logs, the JSON files and the table are
# in WORK (/tmp/device_run); with OUT set (the device tool's), the console log, table.md, results.json
# and logs.tar.gz go there too.
#
# Knobs (environment): DEV (cuda | cpu), QUICK (1: small sizes), TOTAL_S, STAGES (the stages to run, in
# that order; those before draws_tests leave it DRAWS_MIN s: by default what the MNIST stage's bf16 epoch
# says the draws will take), COMPILE_ARGS, COMPILE_PRECISIONS, MNIST_DIR,
# WORK, DRAW_JOBS (draws at once; QUICK on the CPU: 1), and the sizes below.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=${DEV:-cuda}
QUICK=${QUICK:-0}
DRAWS_MIN_SET=${DRAWS_MIN:-} # unset: estimated from the MNIST stage
WORK=${WORK:-/tmp/device_run}
COMPILE_ARGS=${COMPILE_ARGS:---model.training.compile=reduce-overhead}
STAGES=${STAGES:-mnist conv32 profile conv_big draws_tests compile}
if [[ $QUICK == 1 ]]; then
    TOTAL_S=${TOTAL_S:-1500}
    MNIST_BATCHES=${MNIST_BATCHES:-25} CONV_BATCHES=${CONV_BATCHES:-1} CONV_WARMUP=${CONV_WARMUP:-1}
    CONV_BIG_PX=${CONV_BIG_PX:-64} CONV_BIG_BATCHES=${CONV_BIG_BATCHES:-1}
    PROFILE_START=${PROFILE_START:-3} PROFILE_STEPS=${PROFILE_STEPS:-3}
    DRAW_EPOCHS=${DRAW_EPOCHS:-1} DRAW_BATCHES=${DRAW_BATCHES:-10}
    COMPILE_WARMUP=${COMPILE_WARMUP:-1} COMPILE_PRECISIONS=${COMPILE_PRECISIONS:-32-true}
    DRAWS_MIN=${DRAWS_MIN:-60}
    [[ $DEV == cpu ]] && DRAW_JOBS=${DRAW_JOBS:-1} # this CPU is shared: one process at a time
    cap() { echo 400; }
else
    TOTAL_S=${TOTAL_S:-340}
    MNIST_BATCHES=${MNIST_BATCHES:-200} CONV_BATCHES=${CONV_BATCHES:-100} CONV_WARMUP=${CONV_WARMUP:-10}
    CONV_BIG_PX=${CONV_BIG_PX:-128} CONV_BIG_BATCHES=${CONV_BIG_BATCHES:-50}
    PROFILE_START=${PROFILE_START:-40} PROFILE_STEPS=${PROFILE_STEPS:-20}
    DRAW_EPOCHS=${DRAW_EPOCHS:-20} DRAW_BATCHES=${DRAW_BATCHES:-}
    COMPILE_WARMUP=${COMPILE_WARMUP:-20} COMPILE_PRECISIONS=${COMPILE_PRECISIONS:-32-true bf16-mixed}
    # what the draws took on 2026-12-04 (3.8 min), until the MNIST stage gives a better estimate
    DRAWS_MIN=${DRAWS_MIN:-230}
    cap() {  # a stage's own budget, seconds (on 2026-12-04's package about half of it is needed)
        case $1 in
            mnist) echo 90 ;; conv32) echo 80 ;; profile) echo 60 ;; conv_big) echo 45 ;;
            mnist_compile) echo 150 ;; conv32_compile) echo 120 ;; *) echo 300 ;;
        esac
    }
fi
DRAW_JOBS=${DRAW_JOBS:-5}
TABLE_RESERVE=15  # seconds kept for the table at the end
MIN_STAGE_S=20    # a stage given less than this is skipped
ACC=$([[ $DEV == cuda ]] && echo gpu || echo cpu)
export T=${T:-${OMP_NUM_THREADS:-2}}  # the plain loops' torch threads
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1

if [[ -n ${OUT:-} ]]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/device.log") 2>&1
    tee_pid=$!
fi

rm -rf "$WORK"
mkdir -p "$WORK/status" "$WORK/draws"
DEADLINE=$((SECONDS + TOTAL_S))

say() { printf '[%3d s] %s\n' "$SECONDS" "$*"; }
note() { echo "$2" >"$WORK/status/$1"; say "$1: $2"; }
wanted() { [[ " $STAGES " == *" $1 "* ]]; }

# budget NAME [KEEP]: the stage's cap, less what the deadline leaves after KEEP more seconds
budget() {
    local left=$((DEADLINE - SECONDS - TABLE_RESERVE - ${2:-0})) own
    own=$(cap "$1")
    echo $((own < left ? own : left))
}

# finish NAME RC BUDGET START: the stage's status line from its exit code; the log's end on failure
finish() {
    local name=$1 rc=$2 given=$3 took=$((SECONDS - $4))
    case $rc in
        0) note "$name" "ok" ;;
        124 | 137) note "$name" "timeout after ${given} s" ;;
        *) note "$name" "failed (rc $rc)" ;;
    esac
    say "  $name took $took s"
    if [[ $rc != 0 && -f $WORK/$name.log ]]; then tail -n 15 "$WORK/$name.log" | sed 's/^/    | /'; fi
}

# stage NAME KEEP CMD...: CMD under its budget (leaving KEEP s for later stages), output to WORK/NAME.log
stage() {
    local name=$1 keep=$2 given start rc=0
    shift 2
    given=$(budget "$name" "$keep")
    if ((given < MIN_STAGE_S)); then
        note "$name" "skipped (no time left)"
        return 0
    fi
    say "$name (up to $given s): $*"
    start=$SECONDS
    timeout -k 5 "$given" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    finish "$name" "$rc" "$given" "$start"
}

# (each step that matters ends in "|| return 1": a function called as "setup || rc=$?" runs without set -e)
setup() {
    if [[ ! -e ../shared && -d .dev/shared ]]; then ln -sfn "$PWD/.dev/shared" ../shared; fi
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    local wheels=() missing
    if [[ -d .dev/whl ]]; then wheels=(.dev/whl/*.whl); fi
    if ((${#wheels[@]})); then
        # the wheels whose distribution python3 cannot find (the image's, or /tmp/site's from a run before)
        missing=$(python3 - "${wheels[@]}" <<'EOF'
import sys
from importlib import metadata
for path in sys.argv[1:]:
    try:
        metadata.version(path.rsplit("/", 1)[-1].split("-")[0])
    except metadata.PackageNotFoundError:
        print(path)
EOF
)
        if [[ -n $missing ]]; then
            say "setup: installing $(echo "$missing" | wc -l) wheels into /tmp/site"
            # shellcheck disable=SC2086  # one path a line, no spaces
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
                $missing || return 1
        fi
    fi
    if ! python3 -c "import lit_ssgan.cli, albumentations, tensorboardX" 2>"$WORK/import.log"; then
        if ((${#wheels[@]})); then  # an older copy in the image shadows what a wheel needs: all of them, as first done
            say "setup: the package does not import ($(tail -n 1 "$WORK/import.log")); installing every wheel"
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
                "${wheels[@]}" || return 1
        fi
        python3 -c "import lit_ssgan.cli, albumentations, tensorboardX" || return 1
    fi
    MNIST_DIR=${MNIST_DIR:-$([[ -d .dev/mnist ]] && echo "$PWD/.dev/mnist" || echo "$PWD/../shared/data/mnist")}
    ls "$MNIST_DIR"/train-images-idx3-ubyte* ../shared/reference/naive_mnist_step.py >/dev/null || return 1
    python3 - "$WORK/env.json" "$DEV" "$QUICK" "$DRAW_EPOCHS" "$COMPILE_ARGS" "$CONV_BIG_PX" <<'EOF'
import json, platform, re, subprocess, sys, time
import lightning, torch
path, dev, quick, epochs, compile_args, big = sys.argv[1:]
if dev == "cuda":
    assert torch.cuda.is_available(), "DEV=cuda, but torch sees no CUDA GPU"
    name = torch.cuda.get_device_name()
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    if smi.returncode == 0:
        name += f" (nvidia-smi: {smi.stdout.strip()})"
else:
    info = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", info)
    name = f"CPU {model.group(1) if model else platform.processor()}"
git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True)
env = {"dev": dev, "quick": quick == "1", "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
       "lightning": lightning.__version__, "python": platform.python_version(),
       "commit": git.stdout.strip() or "unknown", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
       "draw_epochs": int(epochs), "compile_args": compile_args, "conv_big_px": int(big)}
json.dump(env, open(path, "w"))
print(f"setup: {name}; torch {torch.__version__}, lightning {lightning.__version__}; package at {env['commit']}")
EOF
}

# draws_estimate: seconds the draws will take, from the MNIST stage's bf16 batch (configs/mnist.yaml):
# on 2026-12-04, 7.1 s an epoch alone and 3.8 min for 20 epochs of mnist_fast.yaml five at once (x1.6)
draws_estimate() {
    python3 - "$WORK/mnist.json" "$DRAW_EPOCHS" "${DRAW_BATCHES:-600}" <<'EOF'
import json, sys
ms = json.load(open(sys.argv[1]))["ms_per_batch"]["package, bf16-mixed"]
print(round(1.6 * int(sys.argv[2]) * int(sys.argv[3]) * ms / 1000 + 20))
EOF
}

# the CUDA tests and the five draws at once (on the CPU in QUICK: one process at a time)
draws_tests() {
    local given start rc seeds=(1 2 3 4 5) s i j
    local -A pid_of=() rc_of=()
    given=$(budget draws_tests)
    if ((given < MIN_STAGE_S)); then
        note tests "skipped (no time left)"
        note draws "skipped (no time left)"
        return 0
    fi
    local threads=${DRAW_THREADS:-$(($(nproc) / DRAW_JOBS > 0 ? $(nproc) / DRAW_JOBS : 1))}
    local draw=(python3 benchmarks/mnist.py --data-dir "$MNIST_DIR" --config configs/mnist_fast.yaml
        --epochs "$DRAW_EPOCHS" --precision bf16-mixed --plain-batches 0 --threads "$threads" --out "$WORK/draws")
    local extra=("--trainer.accelerator=$ACC")
    if [[ -n $DRAW_BATCHES ]]; then extra+=("--data.batches_per_epoch=$DRAW_BATCHES" --trainer.limit_val_batches=2); fi
    local tests=(python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py)
    say "draws_tests (up to $given s): ${#seeds[@]} draws, $DRAW_JOBS at a time, $threads threads each, and the CUDA tests"
    start=$SECONDS
    if ((DRAW_JOBS < ${#seeds[@]})); then # the tests first, then the draws a few at a time
        rc=0
        timeout -k 5 "$given" "${tests[@]}" >"$WORK/tests.log" 2>&1 || rc=$?
        finish tests "$rc" "$given" "$start"
    fi
    for i in "${!seeds[@]}"; do
        s=${seeds[i]}
        given=$((DEADLINE - SECONDS - TABLE_RESERVE))
        if ((given < MIN_STAGE_S)); then
            rc_of[$s]=124
            continue
        fi
        timeout -k 5 "$given" "${draw[@]}" --seeds "$s" -- "${extra[@]}" >"$WORK/draw$s.log" 2>&1 &
        pid_of[$s]=$!
        if (((i + 1) % DRAW_JOBS == 0 || i + 1 == ${#seeds[@]})) && ((DRAW_JOBS < ${#seeds[@]})); then
            for j in "${!pid_of[@]}"; do
                if [[ -z ${rc_of[$j]:-} ]]; then
                    rc=0
                    wait "${pid_of[$j]}" || rc=$?
                    rc_of[$j]=$rc
                fi
            done
        fi
    done
    if ((DRAW_JOBS >= ${#seeds[@]})); then # the tests beside the draws
        given=$(budget draws_tests)
        rc=0
        timeout -k 5 "$given" "${tests[@]}" >"$WORK/tests.log" 2>&1 || rc=$?
        finish tests "$rc" "$given" "$start"
    fi
    local failed=() timed_out=()
    for s in "${seeds[@]}"; do
        if [[ -z ${rc_of[$s]:-} ]]; then
            rc=0
            wait "${pid_of[$s]}" || rc=$?
            rc_of[$s]=$rc
        fi
        case ${rc_of[$s]} in
            0) ;;
            124 | 137) timed_out+=("$s") ;;
            *) failed+=("$s (rc ${rc_of[$s]})") ;;
        esac
    done
    if ((${#failed[@]})); then
        note draws "failed: draws ${failed[*]}"
        for s in "${seeds[@]}"; do tail -n 5 "$WORK/draw$s.log" 2>/dev/null | sed "s/^/    draw $s | /"; done
    elif ((${#timed_out[@]})); then
        note draws "timeout: draws ${timed_out[*]} cut"
    else
        note draws "ok"
    fi
    say "  draws_tests took $((SECONDS - start)) s"
}

# the compiled step: "n/a (option missing)" where the CLI refuses COMPILE_ARGS
compile_stages() { # KEEP
    local rc=0
    if (($(budget mnist_compile "$1") < MIN_STAGE_S)); then
        note mnist_compile "skipped (no time left: TOTAL_S=$TOTAL_S; STAGES=compile runs it alone)"
        note conv32_compile "skipped (no time left)"
        return 0
    fi
    # shellcheck disable=SC2086  # COMPILE_ARGS: options, one word each
    timeout "$(budget mnist_compile "$1")" python3 -m lit_ssgan fit --config configs/mnist.yaml $COMPILE_ARGS \
        --print_config >"$WORK/compile_probe.log" 2>&1 || rc=$?
    if ((rc == 124 || rc == 137)); then
        note mnist_compile "timeout (the CLI's check of '$COMPILE_ARGS')"
        note conv32_compile "skipped (no time left)"
        return 0
    elif ((rc != 0)); then
        say "compile: the CLI refuses '$COMPILE_ARGS': $(grep -m1 -i error "$WORK/compile_probe.log" || true)"
        note mnist_compile "n/a (option missing)"
        note conv32_compile "n/a (option missing)"
        return 0
    fi
    # 4 epochs: the median of the 3 after the compiling one, robust to one that compiles again
    # shellcheck disable=SC2086
    stage mnist_compile "$1" python3 benchmarks/speed.py --device "$DEV" --no-naive --no-twin --repeats 1 \
        --epochs 4 --precisions $COMPILE_PRECISIONS --data-dir "$MNIST_DIR" --batches "$MNIST_BATCHES" \
        --json "$WORK/mnist_compile.json" -- $COMPILE_ARGS
    # shellcheck disable=SC2086
    stage conv32_compile "$1" python3 benchmarks/conv_speed.py compare --device "$DEV" --no-naive --repeats 1 \
        --precisions $COMPILE_PRECISIONS --batches "$CONV_BATCHES" --warmup "$COMPILE_WARMUP" \
        --json "$WORK/conv32_compile.json" -- $COMPILE_ARGS
}

say "benchmarks/device.sh: DEV=$DEV QUICK=$QUICK TOTAL_S=$TOTAL_S STAGES='$STAGES' WORK=$WORK"
start=$SECONDS
rc=0
setup >"$WORK/setup.log" 2>&1 || rc=$?
cat "$WORK/setup.log"
finish setup "$rc" "-" "$start"
if ((rc == 0)); then
    keep=0
    if wanted draws_tests; then keep=$DRAWS_MIN; fi # the stages before the draws leave them DRAWS_MIN s
    for name in $STAGES; do
        case $name in
            mnist)
                stage mnist "$keep" python3 benchmarks/speed.py --device "$DEV" --no-twin --repeats 1 \
                    --data-dir "$MNIST_DIR" --batches "$MNIST_BATCHES" --json "$WORK/mnist.json"
                if ((keep > 0)) && [[ -z $DRAWS_MIN_SET ]] && estimate=$(draws_estimate 2>/dev/null); then
                    keep=$((estimate > 60 ? estimate : 60))
                    say "  the draws should take about $estimate s: the stages before them leave $keep s"
                fi
                ;;
            conv32)
                stage conv32 "$keep" python3 benchmarks/conv_speed.py compare --device "$DEV" --repeats 1 \
                    --batches "$CONV_BATCHES" --warmup "$CONV_WARMUP" --json "$WORK/conv32.json"
                ;;
            profile)
                stage profile "$keep" python3 benchmarks/profile_step.py --device "$DEV" --data-dir "$MNIST_DIR" \
                    --start "$PROFILE_START" --steps "$PROFILE_STEPS" --json "$WORK/profile.json"
                ;;
            conv_big)
                stage conv_big "$keep" python3 benchmarks/conv_speed.py compare --device "$DEV" --no-naive \
                    --repeats 1 --precisions bf16-mixed --image-size "$CONV_BIG_PX" --batches "$CONV_BIG_BATCHES" \
                    --warmup "$CONV_WARMUP" --json "$WORK/conv_big.json"
                ;;
            draws_tests)
                draws_tests
                keep=0
                ;;
            compile) compile_stages "$keep" ;;
            *) note "$name" "unknown stage (stages: mnist conv32 profile conv_big draws_tests compile)" ;;
        esac
    done
fi

python3 - "$WORK/env.json" "$SECONDS" <<'EOF' || true
import json, sys
path, seconds = sys.argv[1:]
try:
    env = json.load(open(path))
except OSError:
    env = {}
env["seconds"] = int(seconds)
json.dump(env, open(path, "w"))
EOF
echo
python3 benchmarks/device_table.py "$WORK" | tee "$WORK/table.md"
if [[ -n ${OUT:-} ]]; then
    cp "$WORK/table.md" "$WORK/results.json" "$OUT/" 2>/dev/null || true
    (cd "$WORK" && find . -name '*.log' -o -name '*.json' -o -name '*.csv' | tar czf "$OUT/logs.tar.gz" -T -) || true
fi
say "done"
if [[ -n ${tee_pid:-} ]]; then # let tee write the last lines before the tool takes OUT
    exec >&- 2>&-
    wait "$tee_pid" 2>/dev/null || true
fi
