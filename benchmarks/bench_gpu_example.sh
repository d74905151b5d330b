#!/usr/bin/env bash
# The GPU worked example of docs/bench.md: Fashion-MNIST-LT (imbalance factor 100), 5 seeds x
# {CE, Balanced Softmax, LA tau=2, focal, CE + class-balanced sampler, CE + post-hoc adjustment},
# 30 epochs of a small ResNet, bf16 mixed precision on CUDA. Run from the repository root:
#
#   benchmarks/bench_gpu_example.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR holds the four Fashion-MNIST IDX .gz files (train-images-idx3-ubyte.gz,
# train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz); default:
# data/fashion-mnist, else Debian's /usr/share/datasets/fashion-mnist. To carry them to a machine
# without network: mkdir -p data/fashion-mnist && cp $(dpkg -L dataset-fashion-mnist | grep 'gz$')
# data/fashion-mnist/ (about 30 MB). Nothing is downloaded. Resumable: re-run with the same OUT_DIR.
set -euo pipefail
DATA_DIR="${1:-${DATA_DIR:-data/fashion-mnist}}"
OUT_DIR="${2:-${OUT_DIR:-tailwise-bench/gpu-worked-example}}"
if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ] && [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  DATA_DIR=/usr/share/datasets/fashion-mnist
fi
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"'\
' + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))'
exec "$PYTHON" -m tailwise.cli bench classification --preset gpu-worked-example --data-dir "$DATA_DIR" \
  --out "$OUT_DIR" "${@:3}"
