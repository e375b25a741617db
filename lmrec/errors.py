"""Errors that carry their gRPC status. `lmrec.grpc_server.ErrorMappingInterceptor` maps them in one place."""

from __future__ import annotations

import asyncio

import grpc


class LmrecError(Exception):
    """Base error; subclasses pick the status code clients see."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(LmrecError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(LmrecError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(LmrecError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(LmrecError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DependencyUnavailable(LmrecError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(LmrecError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class ArtifactMismatch(LmrecError):
    """An artifact bundle does not match what the loading service expects."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None = None) -> grpc.StatusCode:
    """The status a served call ended with, for interceptors outside the error mapping (metrics, tracing):
    the code set or aborted with, OK when none was set, CANCELLED when the call was cancelled (the client
    went away or its deadline passed), UNKNOWN for an error nothing mapped."""
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if code is not None:
        return code
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK
