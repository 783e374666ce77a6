# Sourced by the scripts here: the repository root (the working directory from then on), its venv's python and an
# offline environment.  ROMA_EVAL_CACHE must name where the candidate models are pretrained.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
: "${ROMA_EVAL_CACHE:?set ROMA_EVAL_CACHE to the directory the candidate models are pretrained in}"
export ROMA_EVAL_CACHE PYTHONPATH=$repo HF_HOME=${HF_HOME:-$repo/.hf_home} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
cd "$repo"
