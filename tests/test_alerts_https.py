"""Webhook delivery over HTTPS (app.alerts.delivery.send), against a real TLS receiver on 127.0.0.1.

The connection goes to the address checked when the rule was saved (never re-resolved), yet the
certificate must still be valid for the name in the URL and signed by an authority the machine
trusts. A test authority made here is the only one trusted (SSL_CERT_FILE), so these tests show
both halves: the right certificate is accepted, and a wrong name or an unknown authority is not.
"""

from __future__ import annotations

import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.alerts.delivery import DeliveryError, send
from app.alerts.targets import Target


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Authority:
    """A certificate authority for the test, and the server certificates it signs."""

    def __init__(self, directory, label: str):
        self.directory, self.label = directory, label
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(_name(f"{label} test CA")).issuer_name(_name(f"{label} test CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{label}-ca.pem"
        self.path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def server_files(self, dns_name: str) -> tuple[str, str]:
        """(certificate file, key file) of a server certificate for `dns_name`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder().subject_name(_name(dns_name)).issuer_name(self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{self.label}-{dns_name}.pem", self.directory / f"{dns_name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return str(cert_path), str(key_path)


class Receiver:
    """An HTTPS webhook receiver on 127.0.0.1 that records what it was sent."""

    def __init__(self, cert_file: str, key_file: str):
        self.requests: list[tuple[str, str, bytes]] = []  # (path, Host header, body)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, self.headers["Host"], body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.handle_error = lambda *_args: None  # a refused handshake is what some tests expect
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def target(self, host: str = "localhost") -> Target:
        # The address is the one checked when the rule was saved; the name is only for Host and TLS.
        return Target(scheme="https", host=host, port=self.port, address="127.0.0.1", path="/hook?token=t0k3n")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def authority(tmp_path, monkeypatch):
    trusted = Authority(tmp_path, "trusted")
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted.path))  # the only authority this process trusts
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return trusted


@pytest.fixture
def receivers():
    started = []
    yield lambda *files: started.append(Receiver(*files)) or started[-1]
    for receiver in started:
        receiver.close()


def test_https_delivery_reaches_a_receiver_whose_certificate_names_the_url_host(authority, receivers):
    receiver = receivers(*authority.server_files("localhost"))
    assert send(receiver.target(), b'{"alert_id": 1}', {"X-Test": "yes"}, timeout=5) == 200
    assert receiver.requests == [("/hook?token=t0k3n", f"localhost:{receiver.port}", b'{"alert_id": 1}')]


def test_https_delivery_refuses_a_certificate_for_another_name(authority, receivers):
    # Connecting by address must not skip the name check: this certificate is valid, for someone else.
    receiver = receivers(*authority.server_files("other.example"))
    with pytest.raises(DeliveryError, match=r"the connection failed \(SSLError\)"):
        send(receiver.target(), b"{}", {}, timeout=5)
    assert receiver.requests == []


def test_https_delivery_refuses_a_certificate_from_an_authority_the_machine_does_not_trust(
        authority, receivers, tmp_path):
    unknown = Authority(tmp_path, "unknown")
    receiver = receivers(*unknown.server_files("localhost"))
    with pytest.raises(DeliveryError, match=r"the connection failed \(SSLError\)"):
        send(receiver.target(), b"{}", {}, timeout=5)
    assert receiver.requests == []
