#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests, every benchmark on --device cuda, and a short
# full-scale training run (the paper's springs5 data and network), printing the figures.
# Sized for about 8 minutes on one current GPU: each part has its own time limit (they add
# up to 8.5 minutes) so that one slow part cannot eat the rest. After installing the project:
#
#     bash benchmarks/gpu_check.sh [OUT]     # OUT: where data and runs go (default /tmp/nri-gpu)
#
# With two or more GPUs it also times the same training run on two GPUs (torchrun, nccl).
# GPU_CHECK_SMOKE=1 runs the same steps on the CPU at toy sizes, to check the script itself
# on a machine without a GPU (its figures mean nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/nri-gpu}"
mkdir -p "$OUT"
status=0

part() {  # part SECONDS TITLE COMMAND...: run with a limit, report its time and exit status
    local limit=$1 title=$2
    shift 2
    echo
    echo "== $title"
    local start=$SECONDS
    timeout --signal=INT "$limit" "$@"
    local rc=$?
    echo "-- $title: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
}

if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
    DEV=cpu
    TESTS=(-k "refuses_bad_input_before_any_work")
    SIM=(--systems springs --dtypes float32 --baseline-sims 1 --repeats 1)
    STEP=(--objects 5 --batch 8 --hidden 16 --steps 1)
    SCALE=(--objects 5 10 --hidden 16 --steps 1)
    PREC=(--train 64 --test 16 --hidden 8 --epochs 2 --batch 16)
    DATA=(--train 256 --valid 64 --test 64)
    TRAIN=(--set decoder.hidden=16 --set decoder.msg_hidden=16 --set decoder.msg_out=16
           --set guide.encoder.hidden=16)
else
    python -c "
import torch
if not torch.cuda.is_available():
    raise SystemExit('gpu_check.sh: no CUDA device here (torch.cuda.is_available() is False)')
p = torch.cuda.get_device_properties(0)
print(f'{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB; '
      f'torch {torch.__version__}, CUDA {torch.version.cuda}')
" || exit 1
    DEV=cuda
    TESTS=(-k cuda)
    SIM=(--baseline-sims 3 --repeats 2)
    STEP=(--objects 5 10 20 --steps 5)
    SCALE=(--steps 3 --compile)
    PREC=(--train 5000 --test 500 --hidden 256 --epochs 4 --batch 128 --lr 5e-4)
    DATA=()
    TRAIN=()
fi
date -u +"%Y-%m-%d %H:%M UTC"
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")

part 75 "CUDA tests" python -m pytest -q "${TESTS[@]}" tests
part 40 "simulators (sims/s, batched vs NumPy)" \
    python benchmarks/simulate.py --device "$DEV" "${SIM[@]}"
part 80 "SVI step, paper's network (hidden 256, batch 128), ours vs dense" \
    python benchmarks/train_step.py --device "$DEV" "${STEP[@]}"
part 150 "scale: N = 5 ... 100, batch 16, ours vs dense (and compiled)" \
    python benchmarks/scale.py --device "$DEV" --batch 16 --memory-budget-gb 40 "${SCALE[@]}"
part 45 "mixed precision: float32 vs bf16 autocast" \
    python benchmarks/precision.py --device "$DEV" "${PREC[@]}"
# The paper's springs5 (50,000 / 10,000 / 10,000 trajectories), simulated on the device,
# then 2 epochs of the paper's network and recipe: seconds per epoch x 500 = the full run.
part 30 "springs5 dataset (paper size)" \
    nri-pyro simulate springs --device "$DEV" --out "$OUT/springs5" --overwrite "${DATA[@]}"
part 60 "full-scale training, 2 epochs on one device" \
    nri-pyro train --preset springs5-paper --data "$OUT/springs5" \
    --device "$DEV" --epochs 2 --set train.progress=false "${TRAIN[@]}" --out "$OUT/run1-$$"
if [ "$GPUS" -ge 2 ]; then
    part 60 "full-scale training, 2 epochs on two GPUs (torchrun, nccl)" \
        torchrun --standalone --nproc_per_node 2 -m nri_pyro.cli train \
        --preset springs5-paper --data "$OUT/springs5" \
        --device "$DEV" --epochs 2 --set train.progress=false "${TRAIN[@]}" --out "$OUT/run2-$$"
fi

python - "$OUT" "$$" <<'EOF'
import json
import sys
from pathlib import Path

out, pid = Path(sys.argv[1]), sys.argv[2]
print()
for name, label in ((f"run1-{pid}", "1 device"), (f"run2-{pid}", "2 GPUs")):
    path = out / name / "metrics.jsonl"
    if not path.exists():
        continue
    last = [json.loads(line) for line in path.read_text().splitlines()][-1]  # after warm-up
    print(f"{label}: {last['seconds']:.1f} s/epoch (validation included) -> 500 epochs "
          f"~{last['seconds'] * 500 / 3600:.2f} h; valid edge accuracy after "
          f"{last['epoch']} epochs {last.get('valid_edge_accuracy', float('nan')):.3f}")
EOF
exit $status
