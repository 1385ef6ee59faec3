# One image for every Airflow component and the MLflow server (docker-compose.yaml).
# CPU torch as pinned in requirements.txt; for the gpu worker build with a CUDA torch of the
# same version from the PyTorch index that carries it for your CUDA (not built here), e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 -t fbk-pipeline:gpu .
FROM python:3.11-slim

ARG AIRFLOW_UID=50000
ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    FBK_DATA_DIR=/opt/fbk/data \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

WORKDIR /opt/fbk

# Dependencies first (cached layer): exactly the pinned set the tests run with.
COPY requirements.txt ./
RUN pip install -r requirements.txt \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --force-reinstall --no-deps --index-url "$TORCH_INDEX_URL" "torch==$(pip show torch | sed -n 's/^Version: //p' | cut -d+ -f1)" \
      && pip install --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple "torch==$(pip show torch | sed -n 's/^Version: //p' | cut -d+ -f1)"; \
    fi

# The project itself (dags/, fbk_tasks/, include/), installed without touching the pins.
COPY . .
RUN pip install --no-deps --no-build-isolation -e . \
 && useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /opt/airflow --no-create-home airflow \
 && mkdir -p /opt/airflow/logs /opt/airflow/auth /opt/fbk/data /mlflow-artifacts \
 && chown -R "${AIRFLOW_UID}:0" /opt/airflow /opt/fbk/data /mlflow-artifacts \
 && chmod -R g+rwX /opt/airflow /opt/fbk/data /mlflow-artifacts

USER ${AIRFLOW_UID}
EXPOSE 8080 5000
CMD ["airflow", "version"]
