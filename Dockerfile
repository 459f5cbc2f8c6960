# The azjobs worker as a container image: `docker build -t myapp-worker .`
#
# - slim Python base, a non-root user (uid 10001), no secrets: the storage connection comes from the
#   environment at run time (AzureWebJobsStorage, or AzureWebJobsStorage__accountName with a managed or
#   workload identity; README "Running on Kubernetes and Container Apps");
# - exec-form ENTRYPOINT: the worker is PID 1 and gets SIGTERM itself, so a stop drains (--grace);
# - the app's jobs are copied in: replace example_jobs.py (and host.json) with your own modules and
#   name them with -i in CMD or in the Deployment's args.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY azjobs ./azjobs
# azjobs and its dependencies as wheels; [identity] adds azure-identity for managed/workload identity.
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels ".[identity]"

FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AZJOBS_HEARTBEAT=/tmp/azjobs/heartbeat.json
RUN groupadd --system --gid 10001 azjobs \
    && useradd --system --uid 10001 --gid azjobs --home-dir /app --no-create-home --shell /usr/sbin/nologin azjobs
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && rm -rf /wheels
WORKDIR /app
# The app: its jobs module(s) and host.json (queue settings: batchSize, visibilityTimeout, functionTimeout).
COPY host.json example_jobs.py ./
USER 10001:10001
ENTRYPOINT ["azjobs"]
# Work the "emails" queue with the jobs of example_jobs.py; the grace fits Kubernetes' default
# terminationGracePeriodSeconds of 30 (grace + 5 s <= the pod's grace period).
CMD ["-q", "emails", "-i", "example_jobs", "--grace", "25"]
