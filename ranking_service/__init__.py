"""lmrec ranking_service."""
