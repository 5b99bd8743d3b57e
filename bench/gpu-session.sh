#!/usr/bin/env bash
# The GPU quantization path's checks and measurements, batched for the GPU machine (each machine start costs
# minutes, and one command may run 10). Before sending the tree: `bash ../shared/device/pack.sh` from the
# project root, and copy ../shared/models/stories260K, ../shared/models/stories260K-eval.safetensors,
# ../shared/models/tiny (the family checkpoints the decoder tests compare against) and
# ../shared/fixtures/public-gptq-algorithm.safetensors into .gpu/shared (same layout). Then, on the machine,
# from the project root, for example:
#   bash bench/gpu-session.sh tests 7b-fast   # tests and layer benches; a 7B-shaped checkpoint, --preset fast
#   bash bench/gpu-session.sh stories memcheck 7b-default 7b-best
#   tests: every CUDA test of the quantization path, and the layer benches
#   kernels: only the tests of GPTQ's device pieces against their host twins (a short session)
#   7b-fast, 7b-default, 7b-best: a Llama-2-7B-shaped fp16 checkpoint (written first, in the background)
#     quantized end to end with --preset fast / the default preset / --preset best, then verified
#   LAYERS=8 in the environment: the 7B-shaped checkpoint with that many layers (a shorter session)
#   stories: stories260K quantized on the GPU against the CPU (perplexity, every config printed)
#   memcheck: compute-sanitizer over the GPTQ kernels
# Everything is also written to $OUT/log.txt, so a run cut short still reports what it did.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
cd .gpu/app
export GPTQ_SHARED_DIR=$PWD/../shared
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t() { timeout "$1" /tmp/node --test --test-reporter=spec "${@:2}" 2>&1 | grep -E "^\s*(✔|✖|﹣|ℹ (tests|pass|fail))|rror|against|expected|actual" | head -80; }
MODES=" $* "
gen=/tmp/m7b
if [[ $MODES == *" 7b-"* ]]; then
  ( /usr/bin/time -f "generated in %e s" /tmp/node dist/bench/synthetic-fp.js $gen /tmp/t7b.safetensors \
    --shape llama2-7b ${LAYERS:+--layers $LAYERS} --workers 14 > "$OUT/gen.txt" 2>&1 ) &
  genpid=$!
fi

if [[ $MODES == *" tests "* ]]; then
  t 300 dist/test/backend/cuda/gptq-device.test.js dist/test/backend/cuda/fp-target.test.js \
    dist/test/model/cuda-decoder.test.js dist/test/pipeline/cuda-gptq.test.js
  for flags in "" "--clip=hessian" "--clip=hessian --split-range" "--fp-target" \
    "--clip=hessian --split-range --fp-target --fresh-groups" \
    "--clip=hessian --split-range --fp-target --fresh-groups --refine=2"; do
    timeout 40 /tmp/node dist/bench/gptq-cuda.js 4096 4096 262144 4 128 --act-order $flags 2>&1 | tail -2
  done
  timeout 40 /tmp/node dist/bench/gptq-cuda.js 11008 4096 262144 4 128 --act-order 2>&1 | tail -2
fi

if [[ $MODES == *" kernels "* ]]; then
  t 150 dist/test/backend/cuda/gptq-device.test.js dist/test/backend/cuda/fp-target.test.js
fi

if [[ $MODES == *" stories "* ]]; then
  t 300 --test-name-pattern=stories260K dist/test/pipeline/cuda-gptq.test.js
fi

if [[ $MODES == *" memcheck "* ]]; then
  timeout 150 compute-sanitizer --tool memcheck /tmp/node dist/bench/gptq-cuda.js 1024 1000 4096 4 128 \
    --clip=hessian --split-range --fp-target --refine=1 2>&1 | tail -3
fi

q() { # name, then quantize's options
  local name=$1
  shift
  rm -rf /tmp/$name
  timeout 300 /usr/bin/time -v /tmp/node dist/src/cli/main.js quantize $gen --out /tmp/$name \
    --calib /tmp/t7b.safetensors --desc-act --device cuda "$@" > "$OUT/$name.txt" 2> "$OUT/$name.err"
  echo "$name: rc=$?"
  tail -8 "$OUT/$name.txt"
  grep -E "Elapsed|Maximum resident" "$OUT/$name.err"
  tr '\r' '\n' < "$OUT/$name.err" | grep -E "rror" | tail -3
  timeout 120 /usr/bin/time -f "verify %e s" /tmp/node dist/src/cli/main.js verify /tmp/$name 2>&1 | tail -2
}
if [[ $MODES == *" 7b-"* ]]; then
  wait $genpid
  tail -2 "$OUT/gen.txt"
fi
for mode in "$@"; do # in the order given
  [[ $mode == 7b-fast ]] && q q7b-fast --preset fast
  [[ $mode == 7b-default ]] && q q7b-default
  [[ $mode == 7b-best ]] && q q7b-best --preset best
done

