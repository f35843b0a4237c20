#!/usr/bin/env bash
# The CUDA checks, in one run on a machine with an NVIDIA GPU (CI has none; tests never need one).
#
#   bash benchmarks/cuda_check.sh [LOG]        from the repository root, neurodeploy importable
#
# 1. the CUDA tests (the backend against the CPU model, spike for spike);
# 2. the zoo's pruned_squeezenet: the CUDA backend's outputs against the CPU backend's
#    and against the model on the GPU (validate), on 1,000 mnist5k test digits;
# 3. training-step speed against snnTorch's step loop on the same GPU, and a short real
#    training run on the GPU (2 epochs from the CNN twin's weights);
# 4. inference speed against snnTorch's step loop on the same GPU; bigger batches last.
# Each step has its own time limit, so one stuck step does not cost the rest.
set -u
LOG=${1:-out/cuda_check.log}
mkdir -p "$(dirname "$LOG")"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1
ND="python3 -m neurodeploy"
step() {   # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "== $name"
    local t0=$(date +%s)
    timeout "$limit" "$@"
    echo "== $name: rc=$? in $(( $(date +%s) - t0 )) s"
}
{
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
step tests 120 python3 -m pytest -q -p no:cacheprovider \
    tests/graph/test_export.py::test_cuda_backend_matches_cpu_model tests/test_train.py::test_resolve_device_errors
step export 60 $ND export --model pruned_squeezenet -o "$WORK/p.nir"
step run-cpu 90 $ND run "$WORK/p.nir" --samples 1000 --device cpu --save-output "$WORK/cpu.npy" --json
step run-cuda 90 $ND run "$WORK/p.nir" --samples 1000 --device cuda --save-output "$WORK/cuda.npy" --json
step compare 30 python3 -c "
import numpy as np
a, b = np.load('$WORK/cpu.npy'), np.load('$WORK/cuda.npy')
print('outputs', a.shape, 'identical' if np.array_equal(a, b) else 'DIFFER',
      'values differing:', int((a != b).sum()), 'of', a.size,
      'predictions agree:', float((a.sum(0).argmax(-1) == b.sum(0).argmax(-1)).mean()))"
step bench-training 200 python3 benchmarks/bench_training.py --device cuda --rounds 2 \
    --models pruned_squeezenet,squeezenet
step train 240 $ND train --model pruned_squeezenet --twin snn --epochs 2 --device cuda \
    --init-from models/pruned_squeezenet/cnn.pt -o "$WORK/train"
step bench-inference 200 python3 benchmarks/bench_inference.py --device cuda --rounds 2
step validate-cuda 120 $ND validate "$WORK/p.nir" --targets model,torch --samples 1000 --device cuda --json
step bench-training-b256 120 python3 benchmarks/bench_training.py --device cuda --rounds 1 --batch 256 \
    --models pruned_squeezenet
step bench-inference-b512 120 python3 benchmarks/bench_inference.py --device cuda --rounds 1 --batch 512 \
    --models pruned_squeezenet
} 2>&1 | tee "$LOG"
rm -rf "$WORK"
