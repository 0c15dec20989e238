# One image for api, worker and beat (and the one-shot ELK setup job): the taskq package
# installed from this repository with `pip install .`, run as an unprivileged user.
# Build: docker compose build   (or: docker build -t taskq:local .)

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

# --- build: wheels of taskq and its dependencies (no compilers end up in the final image) --
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY taskq ./taskq
COPY api ./api
COPY worker ./worker
COPY loadtest ./loadtest
# Core dependencies only (no extras: no Locust, matplotlib or supervisor in the image), at
# the versions tested (constraints.txt).
RUN pip wheel --constraint constraints.txt --wheel-dir /wheels .

# --- run ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASKQ_VAR_DIR=/var/lib/taskq
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels taskq \
    && groupadd --system --gid 10001 taskq \
    && useradd --system --uid 10001 --gid taskq --home-dir /var/lib/taskq --create-home taskq
USER taskq:taskq
WORKDIR /var/lib/taskq
# Each compose service sets its own command (uvicorn, celery worker, celery beat).
CMD ["python", "-m", "uvicorn", "--factory", "api.main:app_factory", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]
