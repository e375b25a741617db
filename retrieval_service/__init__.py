"""lmrec retrieval_service."""
