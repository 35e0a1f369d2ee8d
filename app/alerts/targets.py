"""Where a webhook may go: http(s) only, never a cloud metadata address, and no loopback, private
or link-local address unless ALERT_ALLOW_PRIVATE_TARGETS is set.

Checked when a rule is saved and again at each delivery, on the addresses DNS gives at that
moment; the delivery then connects to the address it checked (app.alerts.delivery), so a name
that resolves to a public address for the check and to a private one for the connection (DNS
rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

# Refused whatever the settings: they hand out the machine's cloud credentials.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.google.internal.", "metadata", "metadata."})
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


class TargetRefused(ValueError):
    """The webhook URL may not be used; the message says why, for the user."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written in the URL (the Host header and the TLS name)
    port: int
    address: str  # the checked address to connect to
    path: str  # path and query


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified
            or address.is_reserved or address.is_multicast)


def check_address(text: str, allow_private: bool) -> None:
    """Raise TargetRefused when a webhook may not connect to this address."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address in METADATA_ADDRESSES:
        raise TargetRefused(f"{address} is a cloud metadata address; webhooks may never target it.")
    if _is_private(address) and not allow_private:
        raise TargetRefused(
            f"{address} is a loopback, private or link-local address; webhooks may only target one "
            "when the server sets ALERT_ALLOW_PRIVATE_TARGETS=1."
        )


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a webhook URL; TargetRefused when it is not a usable http(s) URL."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise TargetRefused(f"The URL is not valid ({error}).") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused("Only http:// and https:// webhook URLs are allowed.")
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefused("The URL has no host.")
    if parts.username or parts.password:
        raise TargetRefused("The URL may not carry a user name or password; use the signature to authenticate.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or (443 if scheme == "https" else 80), path


def resolve(url: str, allow_private: bool) -> Target:
    """Check the URL and every address its host resolves to; return the target to connect to."""
    scheme, host, port, path = split_url(url)
    if host in METADATA_HOSTS:
        raise TargetRefused(f"{host} is a cloud metadata server; webhooks may never target it.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise TargetRefused(f"The host {host} could not be resolved ({error}).") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise TargetRefused(f"The host {host} has no address.")
    # Every address is checked, not only the first: the resolver may rotate them.
    for address in addresses:
        check_address(address, allow_private)
    return Target(scheme=scheme, host=host, port=port, address=addresses[0], path=path)
