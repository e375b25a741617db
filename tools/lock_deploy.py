"""Writes deploy/requirements-<role>.lock: the pinned, hashed dependencies of each image in deploy/Dockerfile.

Usage: python tools/lock_deploy.py [ROLE ...]   (default: every role; needs uv, part of the dev extra, and PyPI)
Each lock is `uv pip compile pyproject.toml` over the role's extras, for the Python and platform of the image
that installs it; the lmrec wheel itself goes in beside it with --no-deps. Rerun after changing a dependency
or an extra in pyproject.toml: tests/unit/test_deploy_images.py fails while a lock misses one.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# glibc 2.28 or newer: Debian bookworm (python:3.11-slim) and Ubuntu 24.04 (the CUDA images) both qualify.
PLATFORM = "x86_64-manylinux_2_28"
# The line a GPU lock ends with: the CUDA major its onnxruntime-gpu needs.
CUDA_MAJOR_MARK = "# cuda-major:"


class Role(NamedTuple):
    extras: tuple[str, ...]
    python: str  # the image's interpreter: python:3.11-slim, or Ubuntu 24.04's python3 under CUDA


# The Dockerfile's stage of each role installs exactly this lock (deploy/Dockerfile). `tracing` everywhere,
# so that setting LMREC_<SERVICE>_OTLP_ENDPOINT is all it takes to export traces from a container.
ROLES: dict[str, Role] = {
    "serving": Role(("retrieval", "postgres", "tracing"), "3.11"),  # gateway + retrieval shards
    "ranking": Role(("ranking", "tracing"), "3.11"),
    "ranking-gpu": Role(("gpu", "tracing"), "3.12"),
    "ranking-ray-gpu": Role(("gpu", "ray", "tracing"), "3.12"),
}


def lock_path(role: str) -> Path:
    return DEPLOY / f"requirements-{role}.lock"


def compile_command(role: str, uv: str = "uv") -> list[str]:
    spec = ROLES[role]
    return [
        uv, "pip", "compile", "pyproject.toml",
        *[arg for extra in spec.extras for arg in ("--extra", extra)],
        "--python-version", spec.python, "--python-platform", PLATFORM,
        "--generate-hashes", "--no-strip-extras",
        "--custom-compile-command", f"python tools/lock_deploy.py {role}",
        "--output-file", str(lock_path(role).relative_to(ROOT)),
    ]


def cuda_major(onnxruntime_gpu_version: str, python: str, uv: str) -> int:
    """The CUDA major an onnxruntime-gpu release is built for: that of the CUDA runtime its `cuda` extra pulls.

    The image's CUDA base must have the same major, or the CUDA provider fails to load and ranking falls back
    to the CPU with only a warning (ranking_service/onnx_session.py).
    """
    result = subprocess.run(
        [uv, "pip", "compile", "-", "--python-version", python, "--python-platform", PLATFORM,
         "--no-header", "--no-annotate", "--quiet"],
        input=f"onnxruntime-gpu[cuda]=={onnxruntime_gpu_version}\n", capture_output=True, text=True, check=True)
    for line in result.stdout.splitlines():
        name, _, version = line.partition("==")
        if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", name.strip()):
            return int(version.split(".")[0])
    raise SystemExit(f"onnxruntime-gpu {onnxruntime_gpu_version}[cuda] pulls no nvidia-cuda-runtime:\n{result.stdout}")


def pinned_version(lock: Path, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)", lock.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{lock} pins no {package}")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roles", nargs="*", metavar="ROLE", help=f"one of {', '.join(ROLES)} (default: all)")
    parser.add_argument("--upgrade", action="store_true",
                        help="resolve afresh; by default the pins already in a lock are kept where they still fit")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.roles) - ROLES.keys())
    if unknown:
        parser.error(f"unknown role(s) {', '.join(unknown)}; roles: {', '.join(ROLES)}")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        parser.error("uv not found (pip install uv, part of the dev extra)")
    for role in args.roles or ROLES:
        command = [*compile_command(role, uv), "--quiet", *(["--upgrade"] if args.upgrade else [])]
        subprocess.run(command, cwd=ROOT, check=True)
        if "gpu" in ROLES[role].extras:
            lock = lock_path(role)
            version = pinned_version(lock, "onnxruntime-gpu")
            major = cuda_major(version, ROLES[role].python, uv)
            with lock.open("a") as out:
                out.write(f"{CUDA_MAJOR_MARK} {major}  (onnxruntime-gpu {version}; deploy/Dockerfile's CUDA_IMAGE must match)\n")
        print(f"wrote {lock_path(role).relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
