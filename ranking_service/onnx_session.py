"""ONNX Runtime session construction: provider choice, precision choice, thread settings, IO binding."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lmrec.bundle import Precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeChoice:
    precision: Precision
    providers: list[str]

    @property
    def on_cuda(self) -> bool:
        return self.providers[0] == "CUDAExecutionProvider"


def choose_runtime(device: str, precision: str) -> RuntimeChoice:
    """CUDA + FP16 when a GPU is usable, else CPU + INT8; explicit settings win, CUDA falls back loudly."""
    available = ort.get_available_providers()
    want_cuda = device in ("auto", "cuda")
    if want_cuda and "CUDAExecutionProvider" in available:
        return RuntimeChoice("fp16" if precision == "auto" else precision, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    if device == "cuda":
        log.warning("device=cuda asked for but CUDAExecutionProvider is absent (have %s); falling back to CPU",
                    available)
    chosen = "int8" if precision == "auto" else precision
    if chosen == "fp16":
        log.warning("fp16 ONNX on the CPU provider is slow; using int8 instead")
        chosen = "int8"
    return RuntimeChoice(chosen, ["CPUExecutionProvider"])


def new_session(path: Path, runtime: RuntimeChoice, intra_op_threads: int, inter_op_threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op threads spin-wait by default; on a few shared cores that spinning steals CPU from the
    # gateway and retrieval processes (seen in the py-spy profile, docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=options, providers=runtime.providers)
    log.info("loaded %s on %s", path.name, session.get_providers()[0])
    return session


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray], on_cuda: bool) -> list[np.ndarray]:
    """Runs a session; on CUDA through IO binding so outputs land in device memory before one copy back."""
    if not on_cuda:
        return session.run(None, feeds)
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda")
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()
