"""Property-based fuzzing of every public RPC on a real system: whatever a client sends, the answer is a
status that names the caller's mistake (or an answer), never INTERNAL or UNKNOWN, and the server lives on.

Requests are drawn from the messages' own descriptors (every field, repeated and map fields, nested
messages, unknown enum values, NaN and infinite floats, extreme integers, arbitrary unicode), plus raw
byte garbage on every method.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmrec.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.timeout(900)

SERVICE = gw.DESCRIPTOR.services_by_name["GatewayService"]
# >= 10,000 requests in all: per method, drawn messages plus raw garbage.
EXAMPLES_PER_METHOD = 1300
GARBAGE_PER_METHOD = 150
ACCEPTABLE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DEADLINE_EXCEEDED}
FD = pb_descriptor.FieldDescriptor
WORDS = ["", "1", "42", "Comedy", "genre", "year", "books", "home", "a funny movie", "x" * 300, "\x00", "🙂",
         "../../etc/passwd", "' OR 1=1 --", "%s%s"]
INT_RANGES = {FD.TYPE_INT32: (-2**31, 2**31 - 1), FD.TYPE_SINT32: (-2**31, 2**31 - 1), FD.TYPE_SFIXED32: (-2**31, 2**31 - 1),
              FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
              FD.TYPE_INT64: (-2**63, 2**63 - 1), FD.TYPE_SINT64: (-2**63, 2**63 - 1), FD.TYPE_SFIXED64: (-2**63, 2**63 - 1),
              FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1)}


def scalar(fd: pb_descriptor.FieldDescriptor) -> st.SearchStrategy:
    if fd.type == FD.TYPE_STRING:
        return st.one_of(st.sampled_from(WORDS), st.text(max_size=40))
    if fd.type == FD.TYPE_BYTES:
        return st.binary(max_size=40)
    if fd.type == FD.TYPE_BOOL:
        return st.booleans()
    if fd.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return st.one_of(st.floats(width=32), st.sampled_from([0.0, -1.0, 1.0, 1e30, float("nan"), float("inf")]))
    if fd.type == FD.TYPE_ENUM:
        return st.integers(-3, 12)  # proto3 enums are open: unknown values reach the server
    low, high = INT_RANGES[fd.type]
    return st.one_of(st.integers(low, high), st.sampled_from([v for v in (-1, 0, 1, 5, 10, 1000, 10**6) if low <= v <= high]))


@st.composite
def message(draw, descriptor: pb_descriptor.Descriptor, depth: int = 0):
    msg = message_factory.GetMessageClass(descriptor)()
    for fd in descriptor.fields:
        if not draw(st.booleans()):
            continue
        nested = fd.message_type
        if nested is not None and nested.GetOptions().map_entry:
            key_fd, value_fd = nested.fields_by_name["key"], nested.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 3))):
                key = draw(scalar(key_fd))
                if value_fd.message_type is not None:
                    getattr(msg, fd.name)[key].CopyFrom(draw(message(value_fd.message_type, depth + 1)))
                else:
                    getattr(msg, fd.name)[key] = draw(scalar(value_fd))
        elif fd.is_repeated:
            for _ in range(draw(st.integers(0, 4))):
                if nested is not None:
                    if depth < 3:
                        getattr(msg, fd.name).add().CopyFrom(draw(message(nested, depth + 1)))
                else:
                    getattr(msg, fd.name).append(draw(scalar(fd)))
        elif nested is not None:
            if depth < 3:
                getattr(msg, fd.name).CopyFrom(draw(message(nested, depth + 1)))
        else:
            setattr(msg, fd.name, draw(scalar(fd)))
    return msg


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory, bundle_dir, ml100k):
    """A throwaway system (the fuzzer upserts, deletes and erases) over 200 items with a few histories."""
    from lmrec_data.datasets import Dataset
    from tests.integration.conftest import start, subset

    small = subset(ml100k, 200)
    users = {x.user_id for x in small.interactions[:2000]}
    data = Dataset(small.name, small.items, [x for x in small.interactions if x.user_id in users][:2000])
    system = start(tmp_path_factory.mktemp("fuzz"), bundle_dir, data)
    yield system
    system.close()


def _assert_alive(system) -> None:
    reply = health_pb2_grpc.HealthStub(system.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _status(call, payload) -> grpc.StatusCode:
    try:
        call(payload, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        assert exc.code() in ACCEPTABLE, f"{exc.code()}: {exc.details()} for {payload!r:.400}"
        return exc.code()


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
def test_drawn_requests_get_a_clear_status(fuzz_target, method):
    spec = SERVICE.methods_by_name[method]
    call = fuzz_target.channel.unary_unary(
        f"/{SERVICE.full_name}/{method}", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message_factory.GetMessageClass(spec.output_type).FromString)
    seen: set[grpc.StatusCode] = set()

    @settings(max_examples=EXAMPLES_PER_METHOD, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(message(spec.input_type))
    def check(request):
        seen.add(_status(call, request))

    check()
    assert seen, "no request was sent"
    _assert_alive(fuzz_target)


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
def test_raw_garbage_is_invalid_argument(fuzz_target, method):
    call = fuzz_target.channel.unary_unary(f"/{SERVICE.full_name}/{method}")

    @settings(max_examples=GARBAGE_PER_METHOD, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=1, max_size=200))
    def check(payload):
        _status(call, payload)

    check()
    _assert_alive(fuzz_target)
