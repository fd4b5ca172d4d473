"""Keys, certificates and TLS contexts shared by DICOM TLS and HTTPS.

- ``files``: where the key material lives (``<data_dir>/tls/``).
- ``contexts``: ``ssl.SSLContext`` objects built to PS3.15's BCP 195 profile.
- ``authority``: a local certificate authority (create, issue, import, describe),
  written with the ``cryptography`` library; ``dsmpacs tls`` is its command line.
"""
from dsmpacs.tls.contexts import TlsNotConfigured, client_context, server_context
from dsmpacs.tls.files import TlsFiles

__all__ = ["TlsFiles", "TlsNotConfigured", "client_context", "server_context"]
