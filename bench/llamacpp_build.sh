#!/usr/bin/env bash
# Builds llama-cpp-python with CPU flags chosen here, not -march=native, and installs it.
#   LLAMA_CPU=avx2    (default) runs on any x86-64 CPU with AVX2/FMA/F16C/BMI2 (x86-64-v3);
#   LLAMA_CPU=avx512  adds AVX-512 (F, CD, BW, DQ, VL, VBMI) and VNNI kernels: faster for Q8_0
#                     weights where present; where not, awrs refuses to load it and says how
#                     to rebuild;
#   LLAMA_CPU=auto    avx512 where this machine's CPU reports every AVX-512 feature that build
#                     uses, avx2 otherwise;
#   never AMX: its tile instructions fault on machines (VMs) that report AMX but do not enable it.
#   bench/llamacpp_build.sh --print-cpu   prints what LLAMA_CPU resolves to here, and exits.
# The wheel is kept in ~/.cache/awrs/llamacpp-wheels/<version>-<flags hash>/, so a rebuilt
# .venv reuses this build and pip's cache (which does not key on CMAKE_ARGS) is never read.
# The flags and the CPU features they need are written beside the installed library
# (awrs-build-flags.txt), where awrs (before loading it), awrs doctor and the tests read them.
set -euo pipefail
AVX2_FEATURES="avx avx2 fma f16c bmi2"
AVX512_FEATURES="$AVX2_FEATURES avx512f avx512cd avx512bw avx512dq avx512vl avx512vbmi avx512_vnni"
resolve_cpu() {  # auto -> avx512 or avx2, from the flags the kernel reports for this CPU
  local wanted="${LLAMA_CPU:-avx2}"
  if [ "$wanted" != auto ]; then echo "$wanted"; return; fi
  local have feature
  have=" $(grep -m1 '^flags' "${AWRS_CPUINFO:-/proc/cpuinfo}" 2>/dev/null | cut -d: -f2) "
  for feature in $AVX512_FEATURES; do
    case "$have" in *" $feature "*) ;; *) echo avx2; return ;; esac
  done
  echo avx512
}
if [ "${1:-}" = "--print-cpu" ]; then resolve_cpu; exit 0; fi
PY="${1:-.venv/bin/python}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
CPU="$(resolve_cpu)"
COMMON="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
case "$(uname -m)/$CPU" in
  x86_64/avx2)
    FEATURES="$AVX2_FEATURES"
    FLAGS="$COMMON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF" ;;
  x86_64/avx512)
    FEATURES="$AVX512_FEATURES"
    FLAGS="$COMMON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX_VNNI=OFF" ;;
  x86_64/*)
    echo "LLAMA_CPU=$CPU: expected auto, avx2 or avx512" >&2; exit 2 ;;
  *)
    FEATURES=""
    FLAGS="$COMMON" ;;  # other architectures: the compiler's baseline for the target, not native
esac
KEY="$(printf '%s' "$VERSION $FLAGS" | sha256sum | cut -c1-12)"
WHEELS="${AWRS_WHEEL_CACHE:-$HOME/.cache/awrs/llamacpp-wheels}/$VERSION-$CPU-$KEY"
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python $VERSION for $CPU (about 7-10 minutes on 2 cores) into $WHEELS"
  mkdir -p "$WHEELS.partial"
  CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$PY" -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$WHEELS.partial" "llama-cpp-python==$VERSION"
  rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"
fi
"$PY" -m pip install --quiet --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-*.whl
"$PY" -m pip install --quiet "$WHEELS"/llama_cpp_python-*.whl  # its dependencies (a wheel: nothing compiles)
LIB_DIR="$("$PY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib")')"
LIB_SHA="$(sha256sum "$LIB_DIR"/libggml-cpu.so | cut -c1-64)"
printf 'LLAMA_CPU=%s\nCMAKE_ARGS=%s\nCPU_FEATURES=%s\nLIBRARY_SHA256=%s\n' "$CPU" "$FLAGS" "$FEATURES" "$LIB_SHA" \
  > "$LIB_DIR/awrs-build-flags.txt"
echo "llama-cpp-python $VERSION installed for $CPU ($LIB_DIR)"
