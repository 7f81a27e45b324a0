# syntax=docker/dockerfile:1
# The Cerebelum image: one image for every role (worker, mirror, api, the init job, the CLI).
#   docker build -t cerebelum .
#   docker run --rm cerebelum --help
# Your own workflows: build an image FROM this one with your package installed
# (examples/Dockerfile.app, docs/operations.md "Your workflows in the image").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# 1. build: the wheel, from the sources. sql/ and topics/ travel inside it (cerebelum/_data/
#    links to both), so nothing of the checkout is needed at run time.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cerebelum ./cerebelum
COPY topics ./topics
COPY sql ./sql
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /dist .

# 2. the image: the locked dependencies (every transitive one pinned, every file's hash
#    checked: requirements.lock, refreshed by scripts/lock.sh), then the wheel alone. Binary
#    wheels only: the slim image has no compiler, and a missing wheel should fail the build
#    here rather than half-build something.
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/cerebelum-*.whl && rm -rf /tmp/dist

# A user of its own with a fixed numeric id (Kubernetes' runAsNonRoot can check a number, not
# a name). /var/lib/cerebelum/api is where docker-compose.yml's init keeps the API tokens
# file: a named volume mounted there starts with this owner.
RUN groupadd --system --gid 10001 cerebelum \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin cerebelum \
    && mkdir -p /app /var/lib/cerebelum/api \
    && chown 10001:10001 /var/lib/cerebelum/api
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/cerebelum-healthcheck

# The example workflows (`cerebelum worker --app examples.app`), which docker-compose.yml runs;
# an image built FROM this one adds its own package beside them.
WORKDIR /app
COPY examples ./examples

# In a container each process has its own network namespace, so the worker's and the
# mirror's /metrics, /healthz and /readyz are on by default, on every address (a scraper and
# the kubelet reach them by the pod's or container's address). The API listens on 8080.
ENV CEREBELUM_HTTP_HOST=0.0.0.0 \
    CEREBELUM_WORKER_HTTP_PORT=9100 \
    CEREBELUM_MIRROR_HTTP_PORT=9101
EXPOSE 8080 9100 9101

USER 10001:10001
# Healthy while the process answers /healthz on its port: a worker on 9100, a mirror on 9101,
# the API on 8080 (deploy/docker/healthcheck.py). Orchestrators probe each role's own
# endpoints (docker-compose.yml, deploy/k8s/).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["cerebelum-healthcheck"]
ENTRYPOINT ["cerebelum"]
CMD ["--help"]
