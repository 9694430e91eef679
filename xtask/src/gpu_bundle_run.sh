#!/usr/bin/env bash
# DrumVAE's GPU check, run ON the GPU machine from the folder `cargo xtask gpu-bundle` built:
#
#   ./run.sh [RESULTS_DIR]        (default: $OUT if set, else ./results)
#
# Needs: an NVIDIA GPU with its driver (CUDA 13), the CUDA 13 libraries cuBLAS, cuRAND, NVRTC and
# the runtime (PyTorch's nvidia-* wheels or a toolkit), and python3 with torch for the PyTorch
# columns. No Rust toolchain, no network. Every step writes RESULTS_DIR/<step>.txt; summary.txt
# lists each step's exit status and time. QUICK=1 runs fewer repeats.
#
# Steps: the environment (nvidia-smi, torch, which libraries the binaries load); the GPU tests
# (CUDA decode and training step against the CPU, the plugin's worker on the GPU, --device auto);
# `train` on CUDA for a few steps over grooves `drumvae render` writes; the bench's GPU tables
# (training throughput at batch 64/256/512 beside PyTorch on the same GPU, decode latency at
# batch 1 and 64). A failed step is reported and the next one still runs; the exit status is the
# number of failed steps.
set -uo pipefail

bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-${OUT:-$bundle/results}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
summary="$out/summary.txt"
: > "$summary"
failed=0

# The binaries travel as one xz stream (they share most of their bytes); unpack them into a
# temporary folder (the bundle's own folder may be read-only). Python's lzma if there is no xz.
here="$(mktemp -d "${TMPDIR:-/tmp}/drumvae-gpu.XXXXXX")"
trap 'rm -rf "$here"' EXIT
if ! tar -xJf "$bundle/payload.tar.xz" -C "$here" 2> "$out/unpack.txt"; then
    python3 -c 'import lzma, sys, tarfile; tarfile.open(fileobj=lzma.open(sys.argv[1])).extractall(sys.argv[2])' \
        "$bundle/payload.tar.xz" "$here" 2>> "$out/unpack.txt" || {
        echo "cannot unpack $bundle/payload.tar.xz (needs tar with xz, or python3): see $out/unpack.txt" | tee -a "$summary"
        exit 1
    }
fi
cp "$bundle/BUNDLE.txt" "$here/"

note() { echo "$*" | tee -a "$summary"; }

# run_step NAME SECONDS COMMAND...: runs COMMAND with a time limit, output to $out/NAME.txt.
run_step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local start end rc
    start=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.txt" 2>&1
    rc=$?
    end=$(date +%s.%N)
    tail -n 60 "$out/$name.txt"
    local took
    took=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
        note "$name: ok (${took} s)"
    else
        [ "$rc" -eq 124 ] && note "$name: TIMED OUT after $limit s" || note "$name: FAILED, exit $rc (${took} s)"
        failed=$((failed + 1))
    fi
}

# The CUDA libraries: PyTorch's wheels (nvidia/*/lib, torch/lib), then the usual toolkit folders.
# The driver's libcuda.so.1 is found by the system's loader configuration.
python_lib_dirs() {
    python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
try:
    import torch
    roots.add(os.path.dirname(os.path.dirname(torch.__file__)))
except Exception:
    pass
dirs = set()
for root in roots:
    for pattern in ("nvidia/*/lib", "nvidia/*/lib64", "torch/lib"):
        dirs.update(d for d in glob.glob(os.path.join(root, pattern)) if os.path.isdir(d))
print(":".join(sorted(dirs)))
EOF
}
extra_dirs="$(python_lib_dirs)"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
    [ -d "$d" ] && extra_dirs="${extra_dirs:+$extra_dirs:}$d"
done
export LD_LIBRARY_PATH="${extra_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The environment, and whether every library the binaries need resolves.
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    cat "$here/BUNDLE.txt"
    echo
    nvidia-smi || echo "nvidia-smi: not available"
    echo
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' \
        || echo "python3 with torch: not available (the PyTorch columns stay empty)"
    echo
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    for exe in bin/drumvae bin/train tests/gpu bench/model_speed; do
        echo "--- ldd $exe"
        ldd "$here/$exe"
    done
} > "$out/environment.txt" 2>&1
missing=$(grep -h '=> not found' "$out/environment.txt" | awk '{print $1}' | sort -u | tr '\n' ' ')
if [ -n "$missing" ]; then
    note "environment: MISSING LIBRARIES: $missing"
    note "  libcuda.so.1 comes with the NVIDIA driver; the others with a CUDA 13 toolkit or PyTorch's"
    note "  nvidia-cublas / nvidia-curand / nvidia-cuda-nvrtc / nvidia-cuda-runtime wheels (add their lib folder to LD_LIBRARY_PATH)"
    failed=$((failed + 1))
else
    note "environment: every library resolves (see environment.txt)"
fi

repeats_flag=()
[ "${QUICK:-0}" = 1 ] && repeats_flag=(--quick)

# 1. The GPU tests; DRUMVAE_REQUIRE_GPU turns "no GPU, skipped" into a failure here.
DRUMVAE_REQUIRE_GPU=1 run_step gpu-tests 300 "$here/tests/gpu" --test-threads=1 --nocapture

# 2. `train` on CUDA, a few steps over 20 grooves rendered by the CLI (no dataset travels).
data="$out/train-data"
mkdir -p "$data"
render_all() {
    local i
    for i in $(seq 1 20); do
        "$here/bin/drumvae" render --a "seed:$i" --b "seed:$((i + 100))" --morph-x "0:0,8:1" \
            --bars 16 --tempo 120 --out "$data/groove-$i.mid" || return 1
    done
}
export -f render_all
export here data
run_step train-data 120 bash -c render_all
run_step train-cuda 300 "$here/bin/train" --device cuda --data "$data" --folder --preset small \
    --batch-size 64 --epochs 2 --max-steps 20 --prior-samples 16 \
    --run-dir "$out/train-run" --out "$out/train-smoke.safetensors"

# 3. The bench's GPU tables, PyTorch measured beside ours on the same GPU.
DRUMVAE_PYTORCH_PEER="$here/bench/pytorch_peer.py" \
    run_step bench-gpu 480 "$here/bench/model_speed" gpu "${repeats_flag[@]}"

note "results in $out; failed steps: $failed"
exit "$failed"
