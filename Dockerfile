# The orchestrator as a container image: one process per fleet (or per shard), run by a scheduler
# (a Kubernetes CronJob or Job: see deploy/kubernetes/ and README "Scheduling a nightly run").
#
#   docker build -t registry.example.com/orchestrator:1 .
#   docker run --rm -v fleet-reports:/reports -v "$PWD/fleet.toml:/config/fleet.toml:ro" \
#       -e ARCGIS_PASSWORD -e BACKUP_PASSCODE registry.example.com/orchestrator:1 \
#       run --inventory /config/fleet.toml
#
# No secret is baked in: the admin password and the backup passcode come from the environment (or files the
# inventory names) at run time, the inventory from a mounted file.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Reports and, beside them, the run ledger (REPORT_DIR/ledger.sqlite3) go to the /reports volume.
    ORCHESTRATOR_REPORT_DIR=/reports

WORKDIR /opt/orchestrator
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
RUN pip install --no-cache-dir . \
    && rm -rf /opt/orchestrator/orchestrator

# A fixed, unprivileged uid (Kubernetes' runAsNonRoot checks a numeric user) that owns the report volume.
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid orchestrator --home-dir /reports --no-create-home orchestrator \
    && mkdir -p /reports \
    && chown orchestrator:orchestrator /reports
VOLUME ["/reports"]
WORKDIR /reports
USER 10001:10001

ENTRYPOINT ["orchestrator"]
CMD ["--help"]
