"""gunicorn settings, read automatically from the working directory (Heroku's too)."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 20
accesslog = "-"
errorlog = "-"
# Heroku's router sets X-Forwarded-*; ProxyFix in the app reads them.
forwarded_allow_ips = "*"
