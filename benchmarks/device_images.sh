#!/bin/bash
# The image grid on a lent GPU machine (issue 16), in one call of the `device` tool:
#
#   run(command="bash benchmarks/device_images.sh", carry=[".whl", "data/mnist", "data/fashion-mnist"], timeout_s=590)
#
# and back here:  python -m benchmarks.image_grid --merge <files_at>/images.csv
#
# That machine has python3 with torch, numpy, pandas, scikit-learn, scipy, click, tqdm, safetensors and
# matplotlib but no pydantic; carry these wheels (made here once, ignored by git):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 python-dotenv==1.2.4
# The datasets travel as the verified cache under data/ (make data fills it here), about 41 MB.
#
# Workers: 8 processes on the one GPU (the image nets are small: one process leaves it mostly idle),
# 2 CPU threads each; no run starts after 7 minutes, so runs in flight end inside the 10-minute call.
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 STREAMDETECT_DATA__DATA_DIR="$PWD/data" STREAMDETECT_DATA__ALLOW_DOWNLOAD=false
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
python3 -m benchmarks.image_grid --workers "${WORKERS:-8}" --device cuda --threads 2 --deadline-s "${DEADLINE_S:-420}" 2>&1 | tee "${OUT:-/tmp}/grid.log"
status=${PIPESTATUS[0]}
cp benchmarks/results/images.csv "${OUT:-/tmp}/images.csv"
for worker in runs/image-grid/worker-*; do tail -n 3 "$worker/worker.log"; done
exit "$status"
