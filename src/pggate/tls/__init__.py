"""TLS and certificates: everything pggate knows about X.509 and OpenSSL.

* :mod:`~pggate.tls.context`: PostgreSQL's ``ssl_*`` settings turned into a server
  :class:`ssl.SSLContext` (``be_tls_init``), key permissions and passphrases, and the server
  certificate facts SCRAM-SHA-256-PLUS needs.
* :mod:`~pggate.tls._libssl`: the one ctypes binding, for what :mod:`ssl` cannot express.
* :mod:`~pggate.tls.certs` and :mod:`~pggate.tls.certcli`: the certificate tooling behind
  ``pggate init`` and ``pggate cert``.
* :mod:`~pggate.tls.x509names`: X.509 names printed as PostgreSQL prints them.

The sans-IO TLS channel itself is :mod:`pggate.transport.tls`.
"""
