#!/bin/bash
# The image grid on a lent GPU machine (issue 16), in one call of the `device` tool:
#
#   run(command="COMMIT=<git rev-parse --short HEAD> bash benchmarks/device_images.sh", carry=[".whl", "data/mnist", "data/fashion-mnist"], timeout_s=600)
#
# and back here:
#   python -m benchmarks.image_grid --merge <files_at>/images.csv
#   tar -xzf <files_at>/figures.tgz -C benchmarks/figures     # twodisc's reconstruction grids and confusion matrices
#
# The tree travels without .git: COMMIT (typed into the command) stamps its rows code_version
# "0.1.0+<COMMIT>+gpu" through the code_version setting, and marks their seconds as GPU seconds.
#
# That machine has python3 with torch, numpy, pandas, scikit-learn, scipy, click, tqdm, safetensors and
# matplotlib but no pydantic; carry these wheels (made here once, ignored by git):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 python-dotenv==1.2.4
# The datasets travel as the verified cache under data/ (`python -m offline.data fetch mnist fashion-mnist`
# fills it here), about 41 MB.
#
# Workers: WORKERS processes (default 15, a core left to the machine) on the one GPU, one CPU thread each: the image nets are small
# and their steps launch-bound, so one process leaves the GPU mostly idle. No run starts after
# DEADLINE_S (default 400 s); at STOP_S (default 555 s) the grid is interrupted like Ctrl-C: the runs in
# flight are lost, every finished row is merged and comes back, inside the call's 600 s.
set -uo pipefail
out="${OUT:-/tmp/device-out}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 STREAMDETECT_DATA__DATA_DIR="$PWD/data" STREAMDETECT_DATA__ALLOW_DOWNLOAD=false
export STREAMDETECT_CODE_VERSION="0.1.0+${COMMIT:-unknown}+gpu"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m benchmarks.image_grid --dry-run | head -n 1
touch /tmp/grid-started
timeout -s INT "${STOP_S:-555}" python3 -m benchmarks.image_grid --workers "${WORKERS:-15}" --device cuda --threads 1 \
  --deadline-s "${DEADLINE_S:-400}" 2>&1 | tee "$out/grid.log"
status=${PIPESTATUS[0]}
cp benchmarks/results/images.csv "$out/images.csv"
new_figures=$(cd benchmarks/figures && find . -maxdepth 1 -name 'images-twodisc-*.png' -newer /tmp/grid-started)
[ -n "$new_figures" ] && tar -czf "$out/figures.tgz" -C benchmarks/figures $new_figures
for worker in runs/image-grid/worker-*; do echo "== $worker"; grep -E "AUROC|failed|Error|error" "$worker/worker.log" | tail -n 4; done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
exit "$status"
