#!/usr/bin/env bash
# GPU check (<= 10 minutes): DDP and FSDP training of a fusion model from shards, the saved model
# reloaded on the CPU must give the same test metrics, throughput in samples/s.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: runs/gpu_check; needs `make install` first)
#
# Writes OUT_DIR/gpu_check.json and prints a table; copy them to benchmarks/results/.
set -euo pipefail
OUT="${1:-runs/gpu_check}"
PY="${PY:-.venv/bin/python}"
mkdir -p "$OUT"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 1 ]; then
  echo "gpu_check: no CUDA device here (torch.cuda.device_count() = 0); run it on a GPU machine" >&2
  exit 2
fi
echo "gpu_check: $GPUS GPU(s): $("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")"

# 1. shards of AV-MNIST (2,100 rows: audio MFCC + image), 2 workers
MANIFEST=$("$PY" -c "import polyfuse.data; from polyfuse.registry import DATASETS; print(DATASETS.get('avmnist').factory().train)")
"$PY" -m polyfuse.cli data shard "$MANIFEST" --label label --out "$OUT/shards" --workers 2 \
  --rows-per-shard 256 --overwrite --no-progress

# 2. train with each strategy on every GPU (a single GPU still runs the sharded code paths)
COMMON=(train.epochs=3 data.batch_size=64 data.num_workers=4 train.progress=false model.fusion=gated)
for STRATEGY in ddp fsdp; do
  "$PY" -m polyfuse.cli train --data "shards://$OUT/shards" --out "$OUT/$STRATEGY" --overwrite --no-progress \
    --accelerator gpu --devices "$GPUS" --strategy "$STRATEGY" "${COMMON[@]}"
done

# 3. reload each saved model on the CPU: its own test evaluation must match the GPU run's
"$PY" - "$OUT" <<'EOF'
import json, sys, time
from pathlib import Path

import torch

import polyfuse
from polyfuse.data.shards import ShardIndex

out = Path(sys.argv[1])
rows = ShardIndex.load(out / "shards").rows("train")
result = {"gpus": torch.cuda.device_count(), "device": torch.cuda.get_device_name(0), "runs": {}}
ok = True
for strategy in ("ddp", "fsdp"):
    metrics = json.loads((out / strategy / "metrics.json").read_text())
    started = time.perf_counter()
    cpu = polyfuse.load(out / strategy).evaluate()  # a Predictor runs on the CPU
    gpu_acc, cpu_acc = metrics["test"]["label"]["acc"], cpu["metrics"]["label"]["acc"]
    same = abs(gpu_acc - cpu_acc) <= 1e-6
    ok &= same and metrics.get("ranks_in_sync", True)
    result["runs"][strategy] = {
        "world_size": metrics.get("world_size", 1), "ranks_in_sync": metrics.get("ranks_in_sync"),
        "test_acc_gpu": gpu_acc, "test_acc_cpu_reload": cpu_acc, "same": same,
        "train_samples_per_s": round(rows * metrics["epochs_run"] / metrics["train_seconds"], 1),
        "train_seconds": metrics["train_seconds"], "cpu_eval_seconds": round(time.perf_counter() - started, 2),
    }
(out / "gpu_check.json").write_text(json.dumps(result, indent=2))
print(f"| strategy | world | in sync | test acc (GPU) | test acc (CPU reload) | same | train samples/s |")
print("|---|---|---|---|---|---|---|")
for name, r in result["runs"].items():
    print(f"| {name} | {r['world_size']} | {r['ranks_in_sync']} | {r['test_acc_gpu']:.4f} | {r['test_acc_cpu_reload']:.4f} | {r['same']} | {r['train_samples_per_s']} |")
sys.exit(0 if ok else 1)
EOF
