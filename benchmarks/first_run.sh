#!/usr/bin/env bash
# The README's first commands as a new user runs them, timed: a fresh clone and virtual environment, vqgen
# installed as the README says (this step needs the network: PyPI), then, with the network cut, the first
# GIF from the ready-trained model, a sample from its prior, and the default `vqgen train` on the MNIST
# inside the package. The network is cut with `unshare -rn` (a user namespace with no network) where the
# kernel allows it, else only the Hub client is told to stay offline (HF_HUB_OFFLINE=1); the script says which.
#
#   bash benchmarks/first_run.sh                 # clones this repository's committed HEAD
#   FROM_TREE=1 bash benchmarks/first_run.sh     # the working tree as it is, uncommitted files too
#   WORK=/tmp/elsewhere bash benchmarks/first_run.sh
#   REUSE=1 bash benchmarks/first_run.sh         # keep the last install; time the commands again
#
# Run it on a quiet machine: the timings are the point. Everything it makes is under $WORK.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-/tmp/vqgen-first-run}"
PYTHON="${PYTHON:-python3}"

if [ "${REUSE:-0}" = 1 ] && [ -x "$WORK/vqgen/.venv/bin/vqgen" ]; then   # keep the install, run the rest afresh
  rm -rf "$WORK/user" "$WORK/cache" "$WORK/hf" && mkdir -p "$WORK/user"
else
  rm -rf "$WORK"
  mkdir -p "$WORK/user"
  if [ "${FROM_TREE:-0}" = 1 ]; then   # tracked and untracked files that git does not ignore
    mkdir -p "$WORK/vqgen"
    (cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 tar --ignore-failed-read -cf - 2>/dev/null) \
      | tar -xf - -C "$WORK/vqgen"
  else
    git clone -q "$REPO" "$WORK/vqgen"
  fi
fi

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# A new user's machine: no vqgen cache and no Hugging Face cache of their own.
export VQGEN_CACHE="$WORK/cache" HF_HOME="$WORK/hf"
unset VQGEN_TEST_DATA VQGEN_DEBUG

cd "$WORK/vqgen"
t0=$(now)
if [ "${REUSE:-0}" = 1 ] && [ -x .venv/bin/vqgen ]; then
  echo "install: kept from an earlier run (REUSE=1)"
  t1=$(now)
else
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  PIP_NO_CACHE_DIR=1 .venv/bin/python -m pip install -q .   # a new user's empty pip cache: every wheel downloaded
  t1=$(now)
  echo "install: $(secs "$t0" "$t1") s for python3 -m venv .venv && pip install . ($(du -sh .venv | cut -f1) installed)"
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "    of which torch $(du -sh "$site/torch" | cut -f1), nvidia (CUDA libraries) $(du -shc "$site"/nvidia* 2>/dev/null | tail -n 1 | cut -f1), vqgen $(du -sh "$site/vqgen" | cut -f1)"
fi
VQGEN="$WORK/vqgen/.venv/bin/vqgen"

if unshare -rn true 2>/dev/null; then
  offline() { unshare -rn "$@"; }
  echo "network: cut for each command below (unshare -rn)"
else
  offline() { HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$@"; }
  echo "network: unshare -rn is not allowed here; the Hub client is set offline (HF_HUB_OFFLINE=1) instead"
fi

cd "$WORK/user"
run() {   # run NAME COMMAND...: time one command, offline, its status lines shown
  local name=$1; shift
  local a b
  a=$(now)
  offline "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
  b=$(now)
  echo "$name: $(secs "$a" "$b") s   ($(grep -v '^\s*$' "$WORK/$name.out" | tail -n 1 || true))"
  { grep -v '^\s*$' "$WORK/$name.err" || true; } | tail -n 4 | sed 's/^/    /'
}
t2=$(now)
run help "$VQGEN" --help
run first-gif "$VQGEN" gif 4 9
t3=$(now)
run second-gif "$VQGEN" gif 4 9
run sample "$VQGEN" sample --digit 7
run train "$VQGEN" train
t4=$(now)
run own-gif "$VQGEN" gif 4 9
echo "from the end of the install: the first GIF after $(secs "$t1" "$t3") s, the end of vqgen train after $(secs "$t1" "$t4") s"
grep -h "test MSE\|MSE" "$WORK/train.err" | tail -n 1 || true
"$WORK/vqgen/.venv/bin/python" - "$WORK/user" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

for gif in sorted(Path(sys.argv[1]).rglob("*.gif")):
    im = Image.open(gif)
    print(f"{gif.relative_to(sys.argv[1])}: {im.n_frames} frames of {im.size[0]}x{im.size[1]}")
EOF
