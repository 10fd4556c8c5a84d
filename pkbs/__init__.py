"""pkbs: a PBS-compatible batch job queue on NATS JetStream and WebDAV.

This package must stay cheap to import: the `qsub` path imports it, so it holds
no imports of its own.
"""

__version__ = "0.1.0"
