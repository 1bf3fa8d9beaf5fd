#!/usr/bin/env bash
# Run study configs one after another, skipping those whose output folder already holds a
# finished run (metrics.json); a killed BundleSFT run resumes from its checkpoint when started
# again. Logs go to logs/studies/<config name>.log.
#   bash benchmarks/run_studies.sh configs/electronic/studies/format/raw_icl.yaml ...
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs/studies
for config in "$@"; do
  out=$(.venv/bin/python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['output_dir'])" "$config")
  if [ -f "$out/metrics.json" ]; then
    echo "skip $config (finished: $out/metrics.json)"
    continue
  fi
  name=$(echo "$config" | sed 's#configs/##; s#/#_#g; s#\.yaml$##')
  echo "$(date -u +%H:%M:%S) run $config"
  BUNDLELLM_PROGRESS=1 .venv/bin/bundlellm run -c "$config" --full > "logs/studies/$name.log" 2>&1 \
    || echo "$(date -u +%H:%M:%S) FAILED $config (see logs/studies/$name.log)"
done
echo "$(date -u +%H:%M:%S) done"
