"""The ``pggate cert`` command group: the CA, server and client certificate steps of
PostgreSQL's docs (runtime.html "Creating Certificates", libpq-ssl.html) as one command each.

Thin by design: arguments become calls into :mod:`pggate.tls.certs`; every failure is a
:class:`PggateError` that ``cli.main`` prints, giving exit code 1.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import TypeAlias

from cryptography import x509

from pggate.errors import PggateError
from pggate.tls import certs

# Generic only in typeshed, hence the string.
_SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_cert_commands(subparsers: _SubParsers) -> None:
    """Register ``cert ca|server|client|revoke|show`` on the main parser's subcommands."""
    cert = subparsers.add_parser("cert", help="make CA, server and client certificates and CRLs")
    commands = cert.add_subparsers(dest="cert_command", required=True)
    _add_ca(commands)
    _add_server(commands)
    _add_client(commands)
    _add_revoke(commands)
    show = commands.add_parser("show", help="describe a certificate (or chain) or a CRL")
    show.add_argument("file", type=Path)
    show.set_defaults(func=cmd_show)


def _dir_option() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--dir", type=Path, default=Path(), help=f"where {certs.ROOT_CERT}/{certs.ROOT_KEY} live"
    )
    return parser


def _key_options(days: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, parents=[_dir_option()])
    parser.add_argument(
        "--rsa",
        type=int,
        choices=certs.RSA_SIZES,
        metavar="BITS",
        help="an RSA key of BITS (2048, 3072, 4096) instead of ECDSA P-256",
    )
    parser.add_argument("--days", type=int, default=days, help=f"validity (default {days})")
    return parser


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-cert", type=Path, metavar="FILE")
    parser.add_argument("--out-key", type=Path, metavar="FILE")


def _add_ca(commands: _SubParsers) -> None:
    ca = commands.add_parser(
        "ca", parents=[_key_options(certs.CA_DAYS)], help="create the local CA (root.crt/key)"
    )
    ca.add_argument("--cn", default="pggate local CA", help="the CA's common name")
    ca.add_argument("--force", action="store_true", help="replace an existing CA")
    ca.set_defaults(func=cmd_ca)


def _add_server(commands: _SubParsers) -> None:
    server = commands.add_parser(
        "server", parents=[_key_options(certs.LEAF_DAYS)], help="issue server.crt/server.key"
    )
    server.add_argument("--name", action="append", default=[], help="DNS name (repeatable)")
    server.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
    server.add_argument("--cn", help="common name (default: the first name)")
    server.add_argument(
        "--self-signed", action="store_true", help="sign with its own key instead of the CA"
    )
    _output_options(server)
    server.set_defaults(func=cmd_server)


def _add_client(commands: _SubParsers) -> None:
    client = commands.add_parser(
        "client", parents=[_key_options(certs.LEAF_DAYS)], help="issue USER.crt/USER.key"
    )
    client.add_argument("--user", required=True, help="the CN: the database user it maps to")
    client.add_argument(
        "--dn",
        action="append",
        default=[],
        metavar="ATTR=VALUE",
        help="extra subject attribute before CN, e.g. O=PGDG or OU=Testing (repeatable)",
    )
    client.add_argument(
        "--passphrase-file", type=Path, help="encrypt the key with this file's first line"
    )
    _output_options(client)
    client.set_defaults(func=cmd_client)


def _add_revoke(commands: _SubParsers) -> None:
    revoke = commands.add_parser(
        "revoke",
        parents=[_dir_option()],
        help="add certificates to the CA's CRL (none: just re-sign it)",
    )
    revoke.add_argument("certs", nargs="*", type=Path, metavar="CERTFILE")
    revoke.add_argument(
        "--serial", action="append", default=[], type=_serial, help="revoke by serial number"
    )
    revoke.add_argument("--crl", type=Path, help=f"CRL file (default DIR/{certs.ROOT_CRL})")
    revoke.add_argument("--crl-dir", type=Path, help="also write it hashed into this ssl_crl_dir")
    revoke.add_argument(
        "--next-update-days",
        type=int,
        default=certs.CRL_DAYS,
        help=f"days until the CRL expires (default {certs.CRL_DAYS}); "
        "an expired CRL makes PostgreSQL reject every client certificate",
    )
    revoke.set_defaults(func=cmd_revoke)


def _serial(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid serial number "{text}"') from None


def _key_args(args: argparse.Namespace) -> tuple[certs.KeyType, int]:
    return ("rsa", args.rsa) if args.rsa else ("ec", 2048)


def _load_ca(directory: Path) -> tuple[x509.Certificate, certs.PrivateKey]:
    return certs.load_cert(directory / certs.ROOT_CERT), certs.load_key(directory / certs.ROOT_KEY)


def _write_pair(
    cert_path: Path,
    key_path: Path,
    cert: x509.Certificate,
    key: certs.PrivateKey,
    passphrase: bytes | None = None,
) -> None:
    certs.write_key(key_path, key, passphrase)
    certs.write_cert(cert_path, cert)
    print(f"wrote {cert_path} and {key_path} (mode 0600)")
    print(certs.describe(cert))


def cmd_ca(args: argparse.Namespace) -> int:
    cert_path, key_path = args.dir / certs.ROOT_CERT, args.dir / certs.ROOT_KEY
    existing = [path for path in (cert_path, key_path) if path.exists()]
    if existing and not args.force:
        raise PggateError(
            f'"{existing[0]}" already exists; replacing the CA invalidates every certificate it '
            "signed (use --force to do it anyway)"
        )
    key_type, bits = _key_args(args)
    cert, key = certs.make_ca(args.cn, key_type=key_type, rsa_bits=bits, days=args.days)
    _write_pair(cert_path, key_path, cert, key)
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    key_type, bits = _key_args(args)
    make = (
        certs.make_self_signed_server_cert
        if args.self_signed
        else functools.partial(certs.make_server_cert, *_load_ca(args.dir))
    )
    cert, key = make(
        args.name, args.ip, common_name=args.cn, key_type=key_type, rsa_bits=bits, days=args.days
    )
    cert_path = args.out_cert or args.dir / certs.SERVER_CERT
    _write_pair(cert_path, args.out_key or args.dir / certs.SERVER_KEY, cert, key)
    return 0


def _dn_extra(pairs: list[str]) -> dict[str, str | list[str]]:
    extra: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise PggateError(f'--dn {pair}: expected "ATTR=VALUE", e.g. "O=PGDG"')
        extra.setdefault(name, []).append(value)
    return dict(extra)


def _read_passphrase(path: Path | None) -> bytes | None:
    """The file's first line, like ``ssl_passphrase_command`` output (CR/LF stripped)."""
    if path is None:
        return None
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise PggateError(f'could not read passphrase file "{path}": {exc.strerror}') from exc
    if not lines or not lines[0]:
        raise PggateError(f'passphrase file "{path}" is empty')
    return lines[0]


def cmd_client(args: argparse.Namespace) -> int:
    passphrase = _read_passphrase(args.passphrase_file)
    ca_cert, ca_key = _load_ca(args.dir)
    key_type, bits = _key_args(args)
    cert, key = certs.make_client_cert(
        ca_cert,
        ca_key,
        args.user,
        dn_extra=_dn_extra(args.dn),
        key_type=key_type,
        rsa_bits=bits,
        days=args.days,
    )
    cert_path = args.out_cert or args.dir / f"{args.user}.crt"
    key_path = args.out_key or args.dir / f"{args.user}.key"
    _write_pair(cert_path, key_path, cert, key, passphrase)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    ca_cert, ca_key = _load_ca(args.dir)
    serials = list(args.serial)
    for path in args.certs:
        cert = certs.load_cert(path)
        if not certs.is_issued_by(cert, ca_cert):
            raise PggateError(f'"{path}" was not issued by the CA in "{args.dir}"')
        serials.append(cert.serial_number)
    crl_path = args.crl or args.dir / certs.ROOT_CRL
    crl = certs.revoke(ca_cert, ca_key, crl_path, serials, next_update_days=args.next_update_days)
    certs.write_crl(crl_path, crl)
    print(f"wrote {crl_path}")
    if args.crl_dir is not None:
        print(f"wrote {certs.hash_dir_link(args.crl_dir, crl)}")
    print(certs.describe_crl(crl))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    path: Path = args.file
    data = path.read_bytes() if path.is_file() else b""
    if b"X509 CRL-----" in data:
        print(certs.describe_crl(certs.load_crl(path)))
        return 0
    try:
        found = certs.load_certs(path)
    except PggateError:
        if b"-----BEGIN" in data or not data:
            raise
        print(certs.describe_crl(certs.load_crl(path)))  # DER: not a certificate, so a CRL?
        return 0
    print("\n\n".join(str(certs.describe(cert)) for cert in found))
    return 0
