# incident_rpc: gunicorn serving wsgi:app; migrations run at start-up under a lock.
# Only the runtime requirements: tests, tooling and the client stay out of the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 INCIDENT_RPC_ENV=production \
    INSTANCE_PATH=/app/instance
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY incident_rpc incident_rpc
COPY migrations migrations
COPY wsgi.py gunicorn.conf.py boot.sh ./
RUN useradd --system --home /app incident && mkdir -p instance && chown incident instance
USER incident

EXPOSE 8000
# Probes the address gunicorn binds (GUNICORN_BIND, else PORT), not a fixed :8000.
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["python", "-m", "incident_rpc.healthcheck"]
CMD ["./boot.sh"]
