"""Datasets: readers into one shape, downloads, erasure exclusion, the load generator's request mix."""
