#!/usr/bin/env bash
# Install vqgen as people install command-line tools, `pipx install .` and `uv tool install .`, each into a
# temporary home, and check that each gives a working `vqgen`: --help, then `vqgen gif 4 9` from the
# ready-trained model in an empty folder (with the network cut where `unshare -rn` is allowed). Prints each
# tool's install time and the size of what it installed, then removes it. pipx and uv come from PyPI into a
# virtual environment of their own; pip's and uv's download caches are kept (the second run is faster).
#
#   bash .ci/install_tools.sh            # both tools
#   bash .ci/install_tools.sh uv         # one
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -gt 0 ]; then TOOLS=("$@"); else TOOLS=(pipx uv); fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/vqgen-tools.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }
if unshare -rn true 2>/dev/null; then offline() { unshare -rn "$@"; }; else offline() { HF_HUB_OFFLINE=1 "$@"; }; fi

python3 -m venv "$TMP/tools"
"$TMP/tools/bin/python" -m pip install -q pipx uv
export PATH="$TMP/tools/bin:$PATH"

for tool in "${TOOLS[@]}"; do
  home="$TMP/$tool" && mkdir -p "$home/bin" "$home/work"
  start=$(now)
  case "$tool" in
    pipx) PIPX_HOME="$home/tools" PIPX_BIN_DIR="$home/bin" pipx install --quiet "$ROOT" >/dev/null ;;
    uv) UV_TOOL_DIR="$home/tools" UV_TOOL_BIN_DIR="$home/bin" uv tool install --quiet "$ROOT" ;;
    *) echo "unknown tool $tool (pipx or uv)"; exit 2 ;;
  esac
  installed=$(secs "$start" "$(now)")
  size=$(du -sh "$home/tools" | cut -f1)
  [ -x "$home/bin/vqgen" ] || { echo "$tool: no vqgen command in $home/bin"; exit 1; }
  help=$("$home/bin/vqgen" --help 2>&1) || true
  grep -q "Train a VQ-VAE" <<<"$help" || { echo "$tool: vqgen --help did not answer:"; echo "$help" | tail -n 20; exit 1; }
  start=$(now)
  out=$(cd "$home/work" && VQGEN_CACHE="$home/cache" offline "$home/bin/vqgen" gif 4 9 2>"$home/err")
  took=$(secs "$start" "$(now)")
  if [ "$out" != "runs/ready-trained/morph_4_to_9.gif" ] || [ ! -s "$home/work/$out" ] \
     || ! grep -q "Using the ready-trained VQ-VAE" "$home/err"; then
    echo "$tool: vqgen gif 4 9 failed"; cat "$home/err"; exit 1
  fi
  echo "$tool install .: ${installed} s, ${size} installed; vqgen --help and vqgen gif 4 9 (${took} s) work"
  case "$tool" in
    pipx) PIPX_HOME="$home/tools" PIPX_BIN_DIR="$home/bin" pipx uninstall vqgen >/dev/null ;;
    uv) UV_TOOL_DIR="$home/tools" UV_TOOL_BIN_DIR="$home/bin" uv tool uninstall vqgen >/dev/null 2>&1 ;;
  esac
  rm -rf "$home"
done
