# incident_rpc: gunicorn serving wsgi:app; migrations run at start-up under a lock.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 INCIDENT_RPC_ENV=production \
    INSTANCE_PATH=/app/instance
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY incident_rpc incident_rpc
COPY migrations migrations
COPY wsgi.py gunicorn.conf.py client.py boot.sh ./
RUN useradd --system --home /app incident && mkdir -p instance && chown incident instance
USER incident

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["./boot.sh"]
