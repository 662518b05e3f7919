# hsi-pipeline image: the flows, the hsi library and the CLI, for ECS (prefect-aws worker), Dask
# workers and process workers alike. rasterio's manylinux wheel bundles GDAL: no system GDAL needed.
#   docker build -t hsi-pipeline:0.1.0 .
#   docker run --rm hsi-pipeline:0.1.0 hsi --help
# Without Docker Hub, build on a local Debian 12 base (python3 + python3-venv) instead:
#   scripts/image.sh build      (makes localhost/hsi-base:bookworm with mmdebstrap, then builds with
#                                --build-arg BASE=localhost/hsi-base:bookworm; see deployments/ecs/README.md)
ARG BASE=python:3.11-slim
FROM ${BASE}

# Build-time only: a CA bundle for pip behind a TLS-intercepting proxy (a path mounted into the build,
# e.g. `-v /etc/ssl/certs/ca-certificates.crt:/run/hsi-build-ca.crt:ro --build-arg
# PIP_CERT=/run/hsi-build-ca.crt`; scripts/image.sh does it). Empty: pip's own certificates.
ARG PIP_CERT=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_LOGGING_EXTRA_LOGGERS=hsi \
    HSI_PROJECT_DIR=/opt/hsi \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A virtualenv works on both bases: python:3.11-slim, and Debian's own python3 (which refuses a
# system-wide pip install, PEP 668). `python`, `pip`, `hsi` and `prefect` resolve to it via PATH.
RUN python3 -m venv /opt/venv

WORKDIR /opt/hsi

# 1) runtime dependencies, pinned by the lock (used as constraints, so test extras stay out);
#    a separate layer that only changes with pyproject.toml / requirements.lock
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c requirements.lock -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2) the project. Sources stay in /opt/hsi too: deployments pull by setting the working directory
#    to $HSI_PROJECT_DIR and load entrypoints such as flows/on_demand.py:on_demand from there.
COPY README.md ./
COPY hsi ./hsi
COPY tasks ./tasks
COPY flows ./flows
COPY deployments ./deployments
COPY cli ./cli
RUN pip install --no-deps . \
    && rm -rf build hsi_pipeline.egg-info \
    && useradd --create-home --uid 1000 hsi \
    && mkdir -p /opt/hsi/hsi-data \
    && chown -R hsi:hsi /opt/hsi/hsi-data

USER hsi
# ECS/Kubernetes workers replace the command with the flow-run command; this is for humans.
CMD ["hsi", "--help"]
