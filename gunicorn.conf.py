"""gunicorn settings, read automatically from the working directory (Heroku's too)."""

import os

from config import Config

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 20
accesslog = "-"
errorlog = "-"
# Heroku's router sets X-Forwarded-*, and ProxyFix in the app reads them. gunicorn believes
# X-Forwarded-Proto only from these peers: any when a proxy is trusted (Heroku's router has no
# fixed address), none otherwise, so that a client reaching gunicorn directly cannot claim HTTPS.
forwarded_allow_ips = "*" if Config.TRUSTED_PROXIES > 0 else ""
