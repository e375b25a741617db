"""lmrec gateway."""
