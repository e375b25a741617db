import os

# Exact scans are one small matrix-vector product per request; OpenBLAS's own thread pool only adds
# contention with the search threads (measured: 5,000-row scan 5 ms single-threaded, 40 ms pooled on 2 busy cores).
# Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from retrieval_service.server import main  # noqa: E402

main()
