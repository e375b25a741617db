"""The contract stays compatible with the last release: `buf breaking` (FILE rules) against its image,
protos/released/lmrec-<version>.binpb, and every file names its Go and Java packages; buf.gen.yaml generates
the Go stubs clients/go builds against."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tests.dev_tools import tool

yaml = pytest.importorskip("yaml", reason="PyYAML reads buf.yaml")

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "protos"
RELEASED = PROTOS / "released" / "lmrec-0.1.0.binpb"
GO_MODULE = re.search(r"^module\s+(\S+)", (REPO / "clients" / "go" / "go.mod").read_text(), re.MULTILINE).group(1)
# The file options 0.1.0 shipped without; buf.yaml excuses adding them until the snapshot carries them.
ADDED_SINCE_RELEASE = ("FILE_SAME_GO_PACKAGE", "FILE_SAME_JAVA_PACKAGE", "FILE_SAME_JAVA_MULTIPLE_FILES")


def buf() -> str:
    return tool("buf", "buf-bin")


def released_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """lmrec's own files in the snapshot (it also holds the well-known types they import)."""
    # A buf image is wire-compatible with a FileDescriptorSet (its extra fields are kept as unknown ones).
    files = descriptor_pb2.FileDescriptorSet.FromString(RELEASED.read_bytes()).file
    return [f for f in files if f.name.startswith("lmrec/")]


def test_no_breaking_change_since_the_release():
    result = subprocess.run([buf(), "breaking", "--against", str(RELEASED.relative_to(PROTOS))], cwd=PROTOS,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_check_catches_a_removed_field(tmp_path):
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    common = copy / "lmrec" / "v1" / "common.proto"
    text = common.read_text()
    assert "  string title = 2;\n" in text
    common.write_text(text.replace("  string title = 2;\n", "", 1))
    result = subprocess.run([buf(), "breaking", "--against", str(RELEASED.relative_to(PROTOS))], cwd=copy,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "title" in result.stdout, result.stdout + result.stderr


def test_snapshot_is_the_released_contract():
    files = {f.name for f in released_files()}
    assert {f"lmrec/v1/{p.name}" for p in (PROTOS / "lmrec" / "v1").glob("*.proto")} >= files, "a file was removed"
    assert "lmrec/v1/gateway_service.proto" in files


def test_option_ignores_last_only_until_the_snapshot_has_the_options():
    ignores = yaml.safe_load((PROTOS / "buf.yaml").read_text())["breaking"].get("ignore_only", {})
    released_with_options = any(f.options.HasField("go_package") for f in released_files())
    for rule in ADDED_SINCE_RELEASE:
        if released_with_options:
            assert rule not in ignores, f"the snapshot has the options now: drop {rule} from buf.yaml's ignore_only"
    assert set(ignores) <= set(ADDED_SINCE_RELEASE), "buf.yaml excuses more than the options added since 0.1.0"


def test_every_file_names_its_go_and_java_packages():
    for proto in sorted((PROTOS / "lmrec" / "v1").glob("*.proto")):
        text = proto.read_text()
        assert f'option go_package = "{GO_MODULE}/lmrecv1;lmrecv1";' in text, proto.name
        assert 'option java_package = "io.github.lmrec.v1";' in text, proto.name
        assert "option java_multiple_files = true;" in text, proto.name


def test_buf_generate_writes_the_go_client_stubs(tmp_path):
    missing = [p for p in ("protoc-gen-go", "protoc-gen-go-grpc", "protoc") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH (Debian: protoc-gen-go protoc-gen-go-grpc protobuf-compiler)")
    result = subprocess.run([buf(), "generate", "protos", "--template", "protos/buf.gen.yaml", "-o", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    go = tmp_path / "clients" / "go" / "lmrecv1"
    for proto in (PROTOS / "lmrec" / "v1").glob("*.proto"):
        stub = go / f"{proto.stem}.pb.go"
        assert stub.is_file(), stub
        assert re.search(r"^package lmrecv1$", stub.read_text(), re.MULTILINE)
    assert (go / "gateway_service_grpc.pb.go").is_file()
    assert (tmp_path / "build" / "gen" / "java" / "io" / "github" / "lmrec" / "v1" / "RecommendRequest.java").is_file()
