"""The public API's bearer tokens and roles, the generated admin token, the explicit off switch, the
per-token rate limit and the message size bound; TLS on every port and mTLS between the gateway and
its workers (certificates made at run time)."""

from __future__ import annotations

import os
import stat
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gateway.limits import largest_request_bytes
from lmrec.auth import token_hash
from lmrec.client import gateway_channel
from lmrec.bundle import load_manifest
from lmrec_tools.supervisor import ProcessGroup
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw, gateway_service_pb2_grpc as gw_grpc
from lmrec.v1 import ranking_service_pb2 as rk, ranking_service_pb2_grpc as rk_grpc
from tests.tls_certs import CertificateAuthority

pytestmark = pytest.mark.integration

CALLS = {  # method -> (a valid request, the role it needs)
    "Recommend": (gw.RecommendRequest(user_id="u", k=3), "read"),
    "GetItems": (gw.GetItemsRequest(item_ids=["1"]), "read"),
    "UpsertItems": (gw.UpsertItemsRequest(items=[common_pb2.Item(item_id="sec-1", title="A title", text="text")]), "write"),
    "RecordFeedback": (gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id="u", item_id="1", event_type=gw.EVENT_TYPE_CLICK)]), "write"),
    "DeleteItems": (gw.DeleteItemsRequest(item_ids=["sec-1"]), "write"),
    "GetUserHistory": (gw.GetUserHistoryRequest(user_id="u"), "admin"),
    "DeleteUserData": (gw.DeleteUserDataRequest(user_id="u"), "admin"),
}
ROLES = ("read", "write", "admin")


def call(address: str, method: str, token: str | None, request=None):
    with gateway_channel(address, token="" if token is None else token) as channel:
        stub = gw_grpc.GatewayServiceStub(channel)
        return getattr(stub, method)(request or CALLS[method][0], timeout=30)


def code_of(address: str, method: str, token: str | None) -> grpc.StatusCode:
    try:
        call(address, method, token)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def write_tokens(path, entries: dict[str, tuple[str, str]]) -> None:
    """entries: name -> (role, token)."""
    path.write_text("".join(f"{name} {role} {token_hash(token)}\n" for name, (role, token) in entries.items()))


def test_roles_decide_what_a_token_may_call_and_the_file_is_reloaded(small_system_factory, tmp_path, monkeypatch):
    tokens = {f"svc-{role}": (role, f"secret-{role}-token") for role in ROLES}
    token_file = tmp_path / "tokens"
    write_tokens(token_file, tokens)
    system = small_system_factory(n_items=50, histories=False,
                                  extra_args={"gateway": ["--auth-tokens-file", str(token_file)]})
    address = system.gateway_address
    monkeypatch.delenv("LMREC_TOKEN")  # from here on only the tokens each call names
    for method, (_, needed) in CALLS.items():
        assert code_of(address, method, None) == grpc.StatusCode.UNAUTHENTICATED, method
        assert code_of(address, method, "not-a-known-token") == grpc.StatusCode.UNAUTHENTICATED, method
        for role in ROLES:
            allowed = ROLES.index(role) >= ROLES.index(needed)
            expected = grpc.StatusCode.OK if allowed else grpc.StatusCode.PERMISSION_DENIED
            assert code_of(address, method, tokens[f"svc-{role}"][1]) == expected, (method, role)
    # Health and reflection stay open.
    with grpc.insecure_channel(address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    # The file is re-read when it changes: a token added works, a token removed stops working.
    write_tokens(token_file, {"svc-read": tokens["svc-read"], "new": ("read", "brand-new-token")})
    deadline = time.monotonic() + 10
    while code_of(address, "GetItems", "brand-new-token") != grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the token file was not reloaded"
        time.sleep(0.2)
    assert code_of(address, "GetUserHistory", tokens["svc-admin"][1]) == grpc.StatusCode.UNAUTHENTICATED


def test_without_tokens_the_gateway_makes_an_admin_token_and_off_must_be_explicit(small_system_factory, monkeypatch):
    system = small_system_factory(n_items=20, histories=False)
    group = system.group
    common = ["--port", "0", "--ranking-address", group.services["ranking"].address,
              "--retrieval-addresses", group.services["retrieval-0"].address]
    state = system.layout.state_dir / "gateway-generated"
    generated = group.start("gateway-generated", "gateway", [*common, "--state-dir", str(state)],
                            env={"LMREC_GATEWAY_AUTH_TOKENS": ""})
    token_path = state / "tokens" / "admin.token"
    assert stat.S_IMODE(os.stat(token_path).st_mode) == 0o600
    assert str(token_path) in generated.log_path.read_text()  # said at start
    monkeypatch.delenv("LMREC_TOKEN")
    assert code_of(generated.address, "GetItems", None) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(generated.address, "DeleteUserData", token_path.read_text().strip()) == grpc.StatusCode.OK

    off = group.start("gateway-off", "gateway", [*common, "--state-dir", str(system.layout.state_dir / "off"),
                                                 "--auth-disabled"], env={"LMREC_GATEWAY_AUTH_TOKENS": ""})
    assert code_of(off.address, "DeleteUserData", None) == grpc.StatusCode.OK
    assert "authentication is OFF" in off.log_path.read_text()


def test_each_token_is_rate_limited_with_the_time_to_wait(small_system_factory):
    system = small_system_factory(n_items=20, histories=False,
                                  extra_args={"gateway": ["--rate-limit-per-s", "1", "--rate-limit-burst", "3"]})
    stub = system.stub
    time.sleep(3.2)  # loading the catalogue spent this token's burst: let it refill
    for _ in range(3):
        stub.GetItems(gw.GetItemsRequest(item_ids=["1"]), timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetItems(gw.GetItemsRequest(item_ids=["1"]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(refused.value)
    from google.rpc import error_details_pb2

    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    wait = info.retry_delay.ToTimedelta().total_seconds()
    assert 0 < wait <= 1.0
    time.sleep(wait + 0.05)
    stub.GetItems(gw.GetItemsRequest(item_ids=["1"]), timeout=10)


def test_the_public_port_takes_the_largest_valid_request_and_nothing_much_bigger(small_system_factory):
    system = small_system_factory(n_items=20, histories=False)
    # The largest valid UpsertItems (every limit at its maximum, 4-byte characters) fits the bound.
    from gateway import servicer as s
    from lmrec import validation as v

    def item(n: int) -> gw.Item:
        attributes = {f"k{a:0{v.MAX_ID_BYTES - 10}d}": common_pb2.AttributeValues(values=[] if a else [
            "v" * v.MAX_ID_BYTES] * s.MAX_ATTRIBUTE_VALUES) for a in range(s.MAX_ATTRIBUTES)}
        return common_pb2.Item(item_id=f"{n:0{v.MAX_ID_BYTES}d}", title="😀" * s.MAX_TITLE_CHARS,
                       text="😀" * v.MAX_ITEM_TEXT_CHARS, attributes=attributes)

    largest = gw.UpsertItemsRequest(items=[item(n) for n in range(s.MAX_ITEM_BATCH)])
    assert largest.ByteSize() <= largest_request_bytes() < 2 * largest.ByteSize()
    too_big = gw.RecommendRequest(user_id="u", k=3, query="x" * (largest_request_bytes() + 1))
    with pytest.raises(grpc.RpcError) as refused:
        system.stub.Recommend(too_big, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_tls_on_every_port_and_workers_accept_only_the_gateways_certificate(tmp_path, bundle_dir, monkeypatch):
    ca = CertificateAuthority(tmp_path / "ca", "lmrec-ca")
    server = ca.issue("server", server=True)
    gateway_client = ca.issue("gateway-client", server=False)
    rogue = CertificateAuthority(tmp_path / "rogue", "rogue-ca").issue("rogue-client", server=False)
    worker_tls = ["--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
                  "--tls-client-ca-file", str(ca.cert_file)]
    as_gateway = grpc.ssl_channel_credentials(ca.cert_file.read_bytes(), gateway_client.key.read_bytes(),
                                              gateway_client.cert.read_bytes())
    dimension = load_manifest(bundle_dir, verify_checksums=False).served_dimension
    group = ProcessGroup(tmp_path / "run")
    try:
        retrieval = group.start("retrieval-0", "retrieval_service", [
            "--port", "0", "--data-dir", str(tmp_path / "retrieval"), "--dimension", str(dimension), *worker_tls],
            credentials=as_gateway)
        ranking = group.start("ranking", "ranking_service", [
            "--port", "0", "--bundle-dir", str(bundle_dir), "--state-dir", str(tmp_path / "ranking"), *worker_tls],
            credentials=as_gateway)
        gateway = group.start("gateway", "gateway", [
            "--port", "0", "--ranking-address", f"localhost:{ranking.port}",
            "--retrieval-addresses", f"localhost:{retrieval.port}", "--state-dir", str(tmp_path / "gateway"),
            "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
            "--worker-tls-ca-file", str(ca.cert_file), "--worker-tls-cert-file", str(gateway_client.cert),
            "--worker-tls-key-file", str(gateway_client.key)],
            credentials=grpc.ssl_channel_credentials(ca.cert_file.read_bytes()))
        monkeypatch.setenv("LMREC_TLS_CA", str(ca.cert_file))
        target = f"localhost:{gateway.port}"
        with gateway_channel(target) as channel:
            stub = gw_grpc.GatewayServiceStub(channel)
            stub.UpsertItems(gw.UpsertItemsRequest(items=[
                common_pb2.Item(item_id=str(n), title=f"film {n}", text=f"a film about {n}") for n in range(30)]), timeout=60)
            answer = stub.Recommend(gw.RecommendRequest(user_id="u", k=5, recent_item_ids=["1", "2"]), timeout=30)
        assert len(answer.items) == 5 and not answer.degraded, answer.degraded_reason
        # The public port speaks TLS only.
        with grpc.insecure_channel(target) as plain:
            with pytest.raises(grpc.RpcError) as refused:
                gw_grpc.GatewayServiceStub(plain).GetItems(gw.GetItemsRequest(item_ids=["1"]), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # A worker refuses plaintext, TLS without a client certificate, and a certificate of another CA.
        worker = f"localhost:{ranking.port}"
        ca_only = grpc.ssl_channel_credentials(ca.cert_file.read_bytes())
        rogue_creds = grpc.ssl_channel_credentials(ca.cert_file.read_bytes(), rogue.key.read_bytes(),
                                                   rogue.cert.read_bytes())
        for name, channel in (("plaintext", grpc.insecure_channel(worker)),
                              ("no client certificate", grpc.secure_channel(worker, ca_only)),
                              ("another CA's certificate", grpc.secure_channel(worker, rogue_creds))):
            with channel, pytest.raises(grpc.RpcError) as refused:
                rk_grpc.RankingServiceStub(channel).GetModelInfo(rk.GetModelInfoRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, name
        with grpc.secure_channel(worker, as_gateway) as channel:
            assert rk_grpc.RankingServiceStub(channel).GetModelInfo(rk.GetModelInfoRequest(), timeout=5).model_version
    finally:
        group.stop_all()
