#!/usr/bin/env bash
# Builds llama-cpp-python with CPU flags chosen here, not -march=native, and installs it.
#   LLAMA_CPU=avx2    (default) runs on any x86-64 CPU with AVX2/FMA/F16C (x86-64-v3);
#   LLAMA_CPU=avx512  adds AVX-512 (F, BW, DQ, VL, VBMI) and VNNI kernels: faster where present,
#                     an illegal-instruction crash where not;
#   never AMX: its tile instructions fault on machines (VMs) that report AMX but do not enable it.
# The wheel is kept in ~/.cache/awrs/llamacpp-wheels/<version>-<flags hash>/, so a rebuilt
# .venv reuses this build and pip's cache (which does not key on CMAKE_ARGS) is never read.
# The flags are written beside the installed library (awrs-build-flags.txt), where awrs doctor
# and the tests read them.
set -euo pipefail
PY="${1:-.venv/bin/python}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
CPU="${LLAMA_CPU:-avx2}"
COMMON="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
case "$(uname -m)/$CPU" in
  x86_64/avx2)
    FLAGS="$COMMON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF" ;;
  x86_64/avx512)
    FLAGS="$COMMON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX_VNNI=OFF" ;;
  x86_64/*)
    echo "LLAMA_CPU=$CPU: expected avx2 or avx512" >&2; exit 2 ;;
  *)
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
printf 'LLAMA_CPU=%s\nCMAKE_ARGS=%s\nLIBRARY_SHA256=%s\n' "$CPU" "$FLAGS" "$LIB_SHA" > "$LIB_DIR/awrs-build-flags.txt"
echo "llama-cpp-python $VERSION installed for $CPU ($LIB_DIR)"
