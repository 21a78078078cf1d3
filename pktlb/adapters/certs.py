"""Certificates for the lab's TLS, and the checks the proxy runs on a certificate before it serves with it.

``make_lab_pki(directory, vip_names, backend_names)`` makes a throwaway certificate authority and two
certificates it signs: one for the VIP (what the proxy presents to clients) and one for the backends
(when they terminate TLS themselves, or when the proxy encrypts again toward them).  The CA's private
key is never written to disk: once the certificates are signed nobody can issue another one under
that CA, so a lab CA a student trusted cannot be used for anything outside the lab.  The files live
under the lab's own directory (``/run/pktlb/PREFIX/tls/``, mode 0700) and go with ``lab down``::

    ca.pem                       the CA certificate: what clients trust (curl --cacert)
    vip.pem, vip.pem.key         the VIP's certificate and key (HAProxy reads <crt>.key beside <crt>)
    backend.pem, backend.pem.key the backends' certificate (every backend address in one) and key

``check_certificate(cert, key, now)`` reads a PEM certificate and key and says in one sentence what is
wrong with them: not PEM, expired (or not yet valid), a key that does not belong to the certificate.
Uses the ``cryptography`` package (https://cryptography.io).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_TYPES = ("ec", "rsa")  # ECDSA P-256 (the modern default) or RSA 2048 (the common one, dearer to sign with)
LAB_DAYS = 7


class CertificateProblem(ValueError):
    """A certificate or key the proxy cannot serve with: the message says which file and why."""


@dataclass(frozen=True)
class LabPki:
    directory: Path
    ca: Path
    vip_cert: Path
    vip_key: Path
    backend_cert: Path
    backend_key: Path


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    names: tuple[str, ...]  # subjectAltName DNS names and IP addresses


def _new_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key type {key_type!r}: expected one of {', '.join(KEY_TYPES)}")


def _alt_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pktlb lab (throwaway)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_lab_pki(directory: str | Path, vip_names: list[str], backend_names: list[str], *, key_type: str = "ec",
                 days: int = LAB_DAYS, now: datetime.datetime | None = None) -> LabPki:
    """A throwaway CA and the VIP's and backends' certificates under ``directory`` (created, mode 0700)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = now or datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = _new_key(key_type)
    ca_name = _name("pktlb lab CA")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .sign(ca_key, hashes.SHA256()))
    _write(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    paths = {}
    for role, names in (("vip", vip_names), ("backend", backend_names)):
        key = _new_key(key_type)
        cert = (x509.CertificateBuilder().subject_name(_name(names[0] if names else role)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path, key_path = directory / f"{role}.pem", directory / f"{role}.pem.key"
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, _key_pem(key), 0o600)
        paths[role] = (cert_path, key_path)
    return LabPki(directory=directory, ca=directory / "ca.pem", vip_cert=paths["vip"][0], vip_key=paths["vip"][1],
                  backend_cert=paths["backend"][0], backend_key=paths["backend"][1])


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertificateProblem(f"{what} {path}: {exc.strerror or exc}") from None


def check_certificate(cert_path: str, key_path: str, *, now: datetime.datetime | None = None) -> CertificateInfo:
    """What the certificate at ``cert_path`` is, or ``CertificateProblem`` naming the file and the fault."""
    now = now or datetime.datetime.now(datetime.UTC)
    cert_pem, key_pem = _read(cert_path, "certificate"), _read(key_path, "private key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise CertificateProblem(f"certificate {cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        detail = "encrypted with a password" if isinstance(exc, TypeError) else "not a PEM private key"
        raise CertificateProblem(f"private key {key_path}: {detail}") from None
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > not_after:
        raise CertificateProblem(f"certificate {cert_path} expired on {not_after:%Y-%m-%d %H:%M} UTC: "
                                 "clients would refuse it; make a new one")
    if now < not_before:
        raise CertificateProblem(f"certificate {cert_path} is not valid before {not_before:%Y-%m-%d %H:%M} UTC "
                                 "(is the clock right?)")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (cert.public_key().public_bytes(serialization.Encoding.DER, public)
            != key.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise CertificateProblem(f"private key {key_path} does not belong to certificate {cert_path} "
                                 "(their public keys differ)")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        names = ()
    return CertificateInfo(subject=cert.subject.rfc4514_string(), not_before=not_before, not_after=not_after,
                           names=names)
