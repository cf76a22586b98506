# Sourced by the scripts: a self-contained Airflow home and ragindex home inside the checkout.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export RAGINDEX_HOME="${RAGINDEX_HOME:-$ROOT/.ragindex}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Airflow's own .airflowignore handling warns about pathspec's renamed pattern class: not the user's concern.
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore:GitWildMatchPattern:DeprecationWarning}"
export PATH="$ROOT/.venv/bin:$PATH"
