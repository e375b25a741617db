"""lmrec training."""
