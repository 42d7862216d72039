# One image for the code location, the Dagster webserver/daemon and the MLflow server.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 ATFT_HOME=/data DAGSTER_HOME=/opt/dagster/home
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY atft_pipeline ./atft_pipeline
COPY resources ./resources
COPY assets ./assets
COPY configs ./configs
COPY deploy ./deploy
# Editable: the code location, `atft serve` and the deploy files resolve from /app.
RUN pip install -c constraints.txt -e . \
    && mkdir -p $DAGSTER_HOME /data \
    && cp deploy/dagster.yaml $DAGSTER_HOME/dagster.yaml
