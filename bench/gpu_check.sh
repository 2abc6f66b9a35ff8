#!/usr/bin/env bash
# awrs on a GPU machine with no network: builds a small random model there, checks AWRS-SMC's
# exactness on CUDA (transformers backend, and vLLM where installed) and times 10, 64 and 256
# particles against unconstrained sampling; one line per check, under 8 minutes.
#
#   bench/gpu_check.sh             on the GPU machine (its own torch, transformers, maybe vllm)
#   bench/gpu_check.sh --dry-run   here, on the CPU: the same checks, smaller; CUDA lines skipped
#
# PYTHON picks the interpreter (default: python3). Nothing is downloaded: the repository (a few
# MB) is all it needs besides the machine's packages (numpy, regex, torch, transformers, tokenizers).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # nothing may be fetched
exec timeout 480 "${PYTHON:-python3}" bench/gpu_check.py "$@"
