"""Generated gRPC stubs for the lmrec.v1 contract. Regenerate with `make protos`; never edit by hand."""
