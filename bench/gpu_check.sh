#!/usr/bin/env bash
# One command for a GPU machine: the real-scale figures in under 5 minutes, with no downloads.
#
#   bash bench/gpu_check.sh            # on the GPU machine, from the repository root or anywhere
#   bash bench/gpu_check.sh --dry-run  # the same pipeline at toy scale on the CPU (what the tests run)
#
# 1. bench/ldifs_overhead.py  ViT-B-32, 224 px, batch 128, bf16: step times, LDIFS/CE, naive/LDIFS, peak memory
# 2. `ldifs train`            200 steps of LDIFS on ViT-B-32/openai, random weights seeded into a temporary
#                             Hugging Face cache under the real hub name (HF_HUB_OFFLINE=1), synthetic
#                             CIFAR-10-layout data at 224 px: images/s and time to results.json
# 3. bench/eval_throughput.py evaluation path vs bare forward, cold vs warm
# Prints one "GPU-CHECK <figure>=<value>" line per figure at the end. Targets on a GPU:
# LDIFS/CE <= 1.30, peak memory LDIFS/CE <= 1.10, whole/bare evaluation >= 0.85.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export HF_HUB_OFFLINE=1 HF_HOME="$TMP/hf" LDIFS_HOME="$TMP/home" TOKENIZERS_PARALLELISM=false
export PYTHONWARNINGS="error::UserWarning:open_clip.factory"  # a QuickGELU mismatch fails the check

if [ "$DRY" = 1 ]; then
  # NTEST: a few images per split prove the pipeline (data loaders, evaluation, results.json) on the CPU
  DEVICE=cpu; ARCH=ldifs-concept-vit; BATCH=4; KEY=tiny-vit-random; STEPS=2; EVAL_IMAGES=16; NTRAIN=16; NTEST=32
  OVER_ARGS=(--steps 1 --warmup 0 --rounds 1 --precision fp32)
  EVAL_ARGS=(--batch 8 --precision fp32)
else
  DEVICE=cuda; ARCH=ViT-B-32; BATCH=128; KEY=ViT-B-32/openai; STEPS=200; EVAL_IMAGES=4096; NTRAIN=2560; NTEST=512
  OVER_ARGS=(--steps 10 --warmup 3 --rounds 2 --precision bf16)
  EVAL_ARGS=(--batch 256 --precision bf16)
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
fi

echo "== 1/3 LDIFS overhead ($ARCH, batch $BATCH, $DEVICE)"
"$PY" "$HERE/ldifs_overhead.py" --arch "$ARCH" --batch "$BATCH" --device "$DEVICE" "${OVER_ARGS[@]}" \
  | tee "$TMP/overhead.txt"

echo "== 2/3 ldifs train: $STEPS steps of $KEY through the offline model cache"
if [ "$DRY" = 0 ]; then
  "$PY" "$HERE/offline_setup.py" seed --arch ViT-B-32 --tag openai --hf-home "$HF_HOME" >/dev/null
fi
"$PY" "$HERE/offline_setup.py" data --root "$TMP/datasets" --train "$NTRAIN" --test "$NTEST" >/dev/null
cat > "$TMP/spec.yaml" <<EOF
name: gpu check
backbone: $KEY
data: {target: cifar10, controls: [mnist, svhn], max_eval_samples: $NTEST, num_workers: 4}
method: {name: ldifs, params: {alpha: 10}}
optim: {steps: $STEPS, batch_size: $BATCH, warmup_steps: 10, checkpoint_every: $STEPS, lr: 1.0e-5}
eval: {linear_probe: false, curve_points: 0}
EOF
T0=$(date +%s.%N)
"$PY" "$HERE/offline_setup.py" train "$TMP/spec.yaml" --out "$TMP/run" --data-root "$TMP/datasets" > "$TMP/train.txt"
T1=$(date +%s.%N)

echo "== 3/3 evaluation path ($ARCH, $EVAL_IMAGES images, $DEVICE)"
"$PY" "$HERE/eval_throughput.py" --arch "$ARCH" --images "$EVAL_IMAGES" --device "$DEVICE" "${EVAL_ARGS[@]}" \
  | tee "$TMP/eval.txt"

"$PY" - "$TMP" "$T0" "$T1" <<'EOF'
import json, re, sys
from pathlib import Path
tmp, t0, t1 = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
over = (tmp / "overhead.txt").read_text()
head = over.splitlines()[0]
print(f"GPU-CHECK {head}")
for label, key in (("CE", "ce"), ("LDIFS", "ldifs"), ("naive LDIFS", "naive")):
    m = re.search(rf"^{re.escape(label)}\s+median step\s+([\d.]+) ms\s+\(\s*([\d.]+) img/s\)(?:\s+peak (\d+) MiB)?", over, re.M)
    print(f"GPU-CHECK step_ms_{key}={m.group(1)} img_s_{key}={m.group(2)}" + (f" peak_mib_{key}={m.group(3)}" if m.group(3) else ""))
last = over.strip().splitlines()[-1]
print(f"GPU-CHECK {last.split()[0]}   (target <= 1.30)")
print(f"GPU-CHECK {last.split()[1]}")
mem = re.search(r"peak_ldifs_over_ce=([\d.]+)", over)
print(f"GPU-CHECK peak_ldifs_over_ce={mem.group(1) if mem else 'n/a (CPU)'}   (target <= 1.10)")
r = json.loads((tmp / "run" / "results.json").read_text())
steps, batch, train_s = r["training"]["steps"], r["training"]["batch_size"], r["timing"]["train_s"]
print(f"GPU-CHECK train_images_per_s={steps * batch / train_s:.1f} ({steps} steps x {batch}, {r['training']['precision']}, {r['training']['device']})")
print(f"GPU-CHECK time_to_results_json_s={t1 - t0:.1f}")
ev = (tmp / "eval.txt").read_text().strip().splitlines()[-1].split()
for item in ev:
    print(f"GPU-CHECK {item}" + ("   (target >= 0.85)" if item.startswith("whole_over_bare") else ""))
EOF
