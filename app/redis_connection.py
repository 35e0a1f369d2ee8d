"""The Redis client class used by the web app and by `rq worker --connection-class`."""

from typing import Any

import redis


class Redis(redis.Redis):
    """Redis that accepts Heroku Redis's rediss:// endpoints, whose certificates are self-signed."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any):
        if url.startswith("rediss://"):
            kwargs.setdefault("ssl_cert_reqs", None)
        kwargs.setdefault("health_check_interval", 30)
        kwargs.setdefault("socket_keepalive", True)
        return super().from_url(url, **kwargs)
