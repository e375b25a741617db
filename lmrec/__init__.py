"""lmrec: shared configuration, errors, gRPC plumbing, artifact manifests and the generated contract."""

__version__ = "0.1.0"
