"""The tools on top of the tiers: the `lmrec` command, the process supervisor, the load generator, the catalogue loader."""
