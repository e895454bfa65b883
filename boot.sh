#!/bin/sh
# Container entry point: wait for the database, then hand the process to gunicorn
# (which runs the migrations under a lock as the app starts).
set -e
python - <<'PY'
import sys, time
from sqlalchemy import create_engine, text
from incident_rpc.config import Config, with_psycopg2
# The app's own reading of DATABASE_URL, with DATABASE_PASSWORD put in.
url = with_psycopg2(Config.SQLALCHEMY_DATABASE_URI)
for attempt in range(60):
    try:
        with create_engine(url).connect() as connection:
            connection.execute(text("SELECT 1"))
        sys.exit(0)
    except Exception as error:
        print(f"waiting for the database ({type(error).__name__})", flush=True)
        time.sleep(1)
sys.exit("the database did not come up in 60 s")
PY
exec gunicorn wsgi:app
