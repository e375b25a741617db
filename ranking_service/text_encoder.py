"""The LM text encoder on ONNX Runtime: tokenise, pad to a length bucket, run, return unit vectors."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from lmrec.bundle import Bundle
from ranking_service.onnx_session import RuntimeChoice, new_session, run

# Padding to a few fixed lengths keeps the set of shapes small, so warm-up covers what serving sees.
LENGTH_BUCKET = 16


class TextEncoder:
    def __init__(self, bundle: Bundle, runtime: RuntimeChoice, intra_op_threads: int = 0,
                 inter_op_threads: int = 1) -> None:
        spec = bundle.manifest.encoder
        self.dimension = spec.dimension
        self.max_length = spec.max_length
        self._tokenizer = Tokenizer.from_file(str(bundle.tokenizer_file))
        self._tokenizer.enable_truncation(self.max_length)
        self._tokenizer.no_padding()
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0
        self._runtime = runtime
        self.precision = runtime.precision
        self._session = new_session(bundle.path("encoder", runtime.precision), runtime, intra_op_threads,
                                    inter_op_threads)

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self._tokenizer.encode_batch(texts)
        longest = max((len(e.ids) for e in encodings), default=1)
        width = min(self.max_length, -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET)
        ids = np.full((len(texts), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = min(len(enc.ids), width)
            ids[row, :n] = enc.ids[:n]
            mask[row, :n] = 1
        return ids, mask

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        ids, mask = self.tokenize(texts)
        out = run(self._session, {"input_ids": ids, "attention_mask": mask}, self._runtime.on_cuda)[0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def warm_up(self, max_batch: int) -> None:
        """Runs every length bucket once and a full batch once, so no first request pays for allocation
        and (on CUDA) kernel selection of a new shape."""
        for width in range(LENGTH_BUCKET, self.max_length + 1, LENGTH_BUCKET):
            self.encode([" ".join(["movie"] * (width - 2))])
        self.encode(["a short warm-up text"] * max_batch)
