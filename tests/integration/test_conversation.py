"""Conversational recommendation against the real system (ML-100K's catalogue, cold users): constraints
kept over turns, negation, references to shown items, refinements, session feedback, persistence across
a gateway restart, trimming, expiry, erasure, and bad input."""

from __future__ import annotations

import time
import uuid

import grpc
import numpy as np
import pytest

from lmrec.client import gateway_channel
from lmrec_data.datasets import Dataset
from lmrec.v1 import gateway_service_pb2 as gw, gateway_service_pb2_grpc as gw_grpc
from tests.integration.conftest import start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def system(tmp_path_factory, bundle_dir, ml100k):
    """The whole catalogue, no histories: every user here is cold, so only the session shapes answers."""
    running = start(tmp_path_factory.mktemp("conversation"), bundle_dir, Dataset(ml100k.name, ml100k.items, []))
    yield running
    running.close()


@pytest.fixture(scope="module")
def attributes(ml100k) -> dict[str, dict[str, list[str]]]:
    return {i.item_id: i.attributes for i in ml100k.items}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def turn(system, user: str, session: str, text: str, k: int = 10) -> gw.RecommendResponse:
    return system.stub.Recommend(gw.RecommendRequest(user_id=user, session_id=session, query=text, k=k), timeout=30)


def year(attrs) -> int:
    return int(attrs["year"][0])


def restart_gateway(system, *flags: str) -> None:
    """Stops the gateway alone and starts it again on the same state, with `flags` added."""
    system.channel.close()
    group = system.group
    group.stop("gateway")
    gateway = group.start("gateway", "gateway", [
        "--port", "0", "--ranking-address", group.services["ranking"].address,
        "--retrieval-addresses", group.services["retrieval-0"].address,
        "--state-dir", str(system.layout.state_dir / "gateway"), *flags])
    system.gateway_address = gateway.address
    system.channel = gateway_channel(gateway.address)
    system.stub = gw_grpc.GatewayServiceStub(system.channel)


def test_three_turns_keep_every_constraint_and_say_which_turn_put_an_item_there(system, attributes):
    user, session = new_id("conv"), new_id("s")
    first = turn(system, user, session, "an action movie")
    assert first.session_turn == 1 and len(first.items) == 10
    assert all("Action" in attributes[i.item_id]["genre"] for i in first.items)
    second = turn(system, user, session, "older, from the 80s")
    assert second.session_turn == 2 and len(second.items) == 10
    for item in second.items:
        assert "Action" in attributes[item.item_id]["genre"] and 1980 <= year(attributes[item.item_id]) <= 1989
        texts = [r.text for r in item.reasons if r.kind == gw.REASON_KIND_SESSION_TURN]
        assert "Matches “from the 80s” (turn 2)" in texts and "Matches “action” (turn 1)" in texts
    third = turn(system, user, session, "no thrillers")
    assert third.session_turn == 3 and len(third.items) == 10
    for item in third.items:
        attrs = attributes[item.item_id]
        assert "Action" in attrs["genre"] and 1980 <= year(attrs) <= 1989 and "Thriller" not in attrs["genre"]
    # Without the session, the last turn alone keeps none of that.
    alone = system.stub.Recommend(gw.RecommendRequest(user_id=new_id("conv"), query="no thrillers", k=10), timeout=30)
    assert alone.session_turn == 0
    assert not all("Action" in attributes[i.item_id]["genre"] and 1980 <= year(attributes[i.item_id]) <= 1989
                   for i in alone.items)


def _similarity_to(system, item_id: str, items) -> float:
    """Mean cosine between the item's text vector and those of `items` (the ranking tier's encoder)."""
    from lmrec.v1 import ranking_service_pb2 as rk, ranking_service_pb2_grpc as rk_grpc

    ids = [item_id, *(i.item_id for i in items)]
    texts = system.stub.GetItems(gw.GetItemsRequest(item_ids=ids), timeout=30).items
    with grpc.insecure_channel(system.group.services["ranking"].address) as channel:
        encoded = rk_grpc.RankingServiceStub(channel).Encode(
            rk.EncodeRequest(inputs=[rk.EncodeInput(text=t.text) for t in texts]), timeout=30)
    vectors = np.array([v.values for v in encoded.vectors])
    return float((vectors[1:] @ vectors[0]).mean())


def test_more_like_the_second_one_moves_toward_it_and_less_like_that_away(system):
    user, session = new_id("conv"), new_id("s")
    shown = turn(system, user, session, "a drama").items
    second = shown[1].item_id
    closer = turn(system, user, session, "more like the second one").items
    assert second not in {i.item_id for i in closer}
    assert _similarity_to(system, second, closer) > _similarity_to(system, second, shown[2:]) + 0.02
    cited = [r for i in closer for r in i.reasons if r.kind == gw.REASON_KIND_SESSION_TURN and r.item_id == second]
    assert cited and "as you asked in turn 2" in cited[0].text
    # "that" is the item pointed at last; pointing away pushes its look-alikes down.
    away = turn(system, user, session, "less like that").items
    assert _similarity_to(system, second, away) < _similarity_to(system, second, closer) - 0.02


def test_negation_excludes_and_a_critique_naming_nothing_is_answered_and_says_so(system, attributes):
    user, session = new_id("conv"), new_id("s")
    answer = turn(system, user, session, "a comedy, not romance")
    assert len(answer.items) == 10
    assert all("Comedy" in attributes[i.item_id]["genre"] and "Romance" not in attributes[i.item_id]["genre"]
               for i in answer.items)
    vague = turn(system, user, session, "something lighter")
    assert len(vague.items) == 10 and not vague.degraded
    for item in vague.items:
        notes = [r.text for r in item.reasons if r.kind == gw.REASON_KIND_SESSION_TURN]
        assert any("something lighter" in n and "names no attribute" in n for n in notes), notes
        assert "Romance" not in attributes[item.item_id]["genre"]  # earlier turns still hold
    unknown_ref = turn(system, new_id("conv"), new_id("s"), "more like the second one")
    assert any("nothing was shown yet" in r.text for i in unknown_ref.items for r in i.reasons)


def test_a_broad_request_offers_refinements_and_choosing_one_is_the_next_turn(system, attributes):
    user, session = new_id("conv"), new_id("s")
    broad = turn(system, user, session, "a good movie")
    assert 3 <= len(broad.refinements) <= 5, broad.refinements
    chip = next(c for c in broad.refinements if c.key == "genre")
    chosen = turn(system, user, session, chip.text)
    assert all(chip.value in attributes[i.item_id]["genre"] for i in chosen.items)
    assert (chip.key, chip.value) not in {(c.key, c.value) for c in chosen.refinements}


def test_session_feedback_steers_the_session_and_erasure_removes_sessions(system, attributes):
    user, session = new_id("conv"), new_id("s")
    shown = turn(system, user, session, "a western").items
    rejected, accepted = shown[0].item_id, shown[1].item_id
    acked = system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id=user, item_id=rejected, event_type=gw.EVENT_TYPE_DISMISS, session_id=session),
        gw.FeedbackEvent(user_id=user, item_id=accepted, event_type=gw.EVENT_TYPE_CLICK, session_id=session)]),
        timeout=30)
    assert acked.accepted_count == 2
    after = turn(system, user, session, "")
    ids = {i.item_id for i in after.items}
    assert after.session_turn == 2 and not ids & {rejected, accepted}
    assert all("Western" in attributes[i]["genre"] for i in ids)
    assert any(r.item_id == accepted and "which you chose in this conversation" in r.text
               for i in after.items for r in i.reasons)
    turn(system, user, new_id("s"), "a comedy")
    erased = system.stub.DeleteUserData(gw.DeleteUserDataRequest(user_id=user), timeout=30)
    assert erased.deleted_session_count == 2 and erased.deleted_event_count == 2
    again = turn(system, user, session, "")
    assert again.session_turn == 1
    assert not all("Western" in attributes[i.item_id]["genre"] for i in again.items)


def test_bad_session_ids_are_refused_naming_the_field(system):
    with pytest.raises(grpc.RpcError) as err:
        turn(system, "u", "x" * 200, "a comedy")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "session_id" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[gw.FeedbackEvent(
            user_id="u", item_id="1", event_type=gw.EVENT_TYPE_CLICK, session_id=" ")]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "events[0].session_id" in err.value.details()


def test_sessions_survive_a_restart_are_trimmed_from_the_oldest_turn_and_expire(system, attributes):
    user, session = new_id("conv"), new_id("s")
    turn(system, user, session, "an action movie")
    turn(system, user, session, "from the 80s")
    restart_gateway(system)
    kept = turn(system, user, session, "not war")
    assert kept.session_turn == 3
    assert all("Action" in attributes[i.item_id]["genre"] and 1980 <= year(attributes[i.item_id]) <= 1989
               and "War" not in attributes[i.item_id]["genre"] for i in kept.items)
    # Two turns kept: after turn 4 is stored, turns 1 and 2 (action, the 80s) are gone.
    restart_gateway(system, "--session-max-turns", "2")
    turn(system, user, session, "")
    trimmed = turn(system, user, session, "a comedy")
    assert trimmed.session_turn == 5
    assert all("Comedy" in attributes[i.item_id]["genre"] and "War" not in attributes[i.item_id]["genre"]
               for i in trimmed.items)
    assert not all("Action" in attributes[i.item_id]["genre"] for i in trimmed.items)
    restart_gateway(system, "--session-ttl-s", "1")
    time.sleep(1.5)
    expired = turn(system, user, session, "")
    assert expired.session_turn == 1
    assert not all("Comedy" in attributes[i.item_id]["genre"] for i in expired.items)
    restart_gateway(system)


def test_the_node_client_holds_a_conversation_from_stdin(system):
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    script = Path(__file__).resolve().parents[2] / "clients" / "node" / "recommend.js"
    if node is None or not (script.parent / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("node, or the Node client's modules (npm ci in clients/node), not available")
    session = new_id("s")
    result = subprocess.run(
        [node, str(script), "--target", system.gateway_address, "--user-id", new_id("node"), "-k", "3",
         "--session", "--session-id", session, "--deadline-ms", "30000"],
        input="an action movie\nfrom the 80s\nmore like the second one\n", capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert "OK: 3 turns passed all checks" in out
    for n, said in enumerate(["an action movie", "from the 80s", "more like the second one"], 1):
        assert f"> {said}" in out and f"turn {n} of session {session}" in out
    assert "Matches “from the 80s” (turn 2)" in out and "as you asked in turn 3" in out
