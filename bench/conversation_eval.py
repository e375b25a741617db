"""Conversational recommendation measured through the public gRPC API (docs/evaluation.md, "Conversation").

Both parts are generated from the catalogue's own attributes (its most-held categorical key, ML-100K's
`genre`, and its year-valued key), with a seed, never hand-picked:

  1. scripted dialogues: turn 1 names a value ("an action movie"), turn 2 adds a decade ("from the 80s"),
     turn 3 negates a second value ("not thriller"), turn 4 points at a shown item ("more like the second
     one"); the constraint set after each turn is known, and constraint satisfaction@10 (share of the top
     10 meeting every active constraint) is measured per turn for: the session (`session_id` kept), the
     last turn only (a new session per turn: the turn is still read, nothing is remembered), no session
     (the turn as plain free text, today's single-turn API) and the client concatenating every turn so far
     into one free-text query (no session). Turn 4 also reports how far the list moved toward the item
     pointed at: its mean co-rating cosine (and genre Jaccard) with the top 10, against a control session
     whose turn 4 is empty.
  2. simulated users (the user-simulator protocol of EAR / CRM, Lei et al. 2020, Sun & Zhang 2018): each
     holds a hidden target item, drawn from the interactions (so in proportion to popularity); turn 1
     states one true attribute of the target; while the target is not in the top 10, each next turn
     rejects every shown item (RecordFeedback DISMISS in the session) and states one more true attribute
     (a suggested refinement when one is true of the target, else the next of its attributes in a seeded
     order: its values of the categorical key, then its decade, then its year); after 5 turns it gives up.
     Success@5 and mean turns to success, for the session against the single-turn baselines above (a new
     cold user per turn, so no rejection is remembered either). The same is repeated with targets drawn
     uniformly from the items with an interaction (the long tail, where popularity helps no one).

Every user is a new, cold one, so only the conversation shapes the answers.

    python bench/conversation_eval.py [--bundle artifacts/lmrec-ml100k] [--data PATH] [--target HOST:PORT]
                                      [--dialogues 200] [--users 200] [--seed 0]
                                      [--out docs/evaluation/ml-100k_conversation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.conversation.periods import decade_text
from gateway.conversation.vocabulary import AttributeVocabulary, as_year
from lmrec.auth import local_token_env
from lmrec_tools.catalog_loader import load_catalog
from lmrec.client import gateway_channel
from lmrec_data.datasets import Dataset, load_dataset, resolve_data_path
from lmrec_tools.loadtest_report import describe_machine
from lmrec.bundle import load_manifest
from lmrec_tools.supervisor import ProcessGroup, SystemLayout, start_system
from lmrec.v1 import gateway_service_pb2 as gw, gateway_service_pb2_grpc as gw_grpc

DEFAULT_BUNDLE = Path("artifacts/lmrec-ml100k")
TOP = 10
MAX_TURNS = 5
# A dialogue's value must be held by this many items, its (value, decade) pair by MIN_PAIR, and after the
# negation MIN_LEFT must remain (so a right answer of 10 exists); the negated value must matter: at least
# MIN_NEGATED of the pair's items hold it.
MIN_VALUE_ITEMS, MIN_PAIR, MIN_LEFT, MIN_NEGATED = 30, 20, 15, 3
CONDITIONS = ("session", "last turn only", "no session", "concatenated text")
SIM_CONDITIONS = ("session", "single turn", "no session", "concatenated text")

VALUE_TEMPLATES = ("a {v} movie", "something {v}", "I'm in the mood for a {v} film", "{v} please",
                   "show me {v} movies")
DECADE_TEMPLATES = ("from the {yy}s", "older, from the {yy}s", "something from the {yyyy}s", "made in the {yyyy}s")
NEGATION_TEMPLATES = ("not {v}", "no {v} please", "without {v}", "anything but {v}", "I don't want {v}")
POINTER_TEMPLATES = ("more like the {nth} one", "the {nth} one, more like that", "something similar to the {nth} one")
ORDINALS = ("first", "second", "third")


@dataclass(frozen=True)
class Catalogue:
    attributes: dict[str, dict[str, list[str]]]
    key: str  # the categorical key dialogues speak of
    year_key: str

    @classmethod
    def of(cls, dataset: Dataset) -> Catalogue:
        attributes = {i.item_id: i.attributes for i in dataset.items}
        vocabulary = AttributeVocabulary.from_items(attributes)
        if vocabulary.year_key is None:
            raise SystemExit("the catalogue has no year-valued attribute: the dialogues need one")
        held = {k: sum(v.values()) for k, v in vocabulary.counts.items() if k != vocabulary.year_key}
        return cls(attributes, max(held, key=held.get), vocabulary.year_key)

    def values(self, item_id: str) -> set[str]:
        return set(self.attributes[item_id].get(self.key, ()))

    def year(self, item_id: str) -> int | None:
        years = [as_year(v) for v in self.attributes[item_id].get(self.year_key, ())]
        return next((y for y in years if y is not None), None)

    def decade(self, item_id: str) -> int | None:
        year = self.year(item_id)
        return None if year is None else year - year % 10


@dataclass(frozen=True)
class Active:
    """A dialogue's known constraint set after a turn: wanted value, decade, unwanted value."""

    value: str | None = None
    decade: int | None = None
    not_value: str | None = None

    def met_by(self, catalogue: Catalogue, item_id: str) -> bool:
        values = catalogue.values(item_id)
        return ((self.value is None or self.value in values)
                and (self.decade is None or catalogue.decade(item_id) == self.decade)
                and (self.not_value is None or self.not_value not in values))


@dataclass(frozen=True)
class Dialogue:
    turns: tuple[str, ...]
    active: tuple[Active, ...]
    pointer: int  # 0-based position turn 4 points at in turn 3's list


def _article(text: str) -> str:
    return re.sub(r"\ba ([aeiou])", r"an \1", text)


def _decade_words(decade: int, rng: np.random.Generator) -> str:
    template = DECADE_TEMPLATES[rng.integers(len(DECADE_TEMPLATES))]
    return template.format(yy=f"{decade % 100:02d}", yyyy=decade)


def generate_dialogues(catalogue: Catalogue, n: int, rng: np.random.Generator) -> list[Dialogue]:
    """`n` four-turn dialogues whose constraint sets the catalogue can satisfy with room to spare."""
    by_value: dict[str, set[str]] = {}
    for item_id in catalogue.attributes:
        for v in catalogue.values(item_id):
            by_value.setdefault(v, set()).add(item_id)
    values = sorted(v for v, ids in by_value.items() if len(ids) >= MIN_VALUE_ITEMS)
    weights = np.array([len(by_value[v]) for v in values], dtype=float)
    out: list[Dialogue] = []
    while len(out) < n:
        value = values[rng.choice(len(values), p=weights / weights.sum())]
        decades = Counter(d for i in by_value[value] if (d := catalogue.decade(i)) is not None)
        pairs = sorted(d for d, c in decades.items() if c >= MIN_PAIR)
        if not pairs:
            continue
        decade = pairs[rng.integers(len(pairs))]
        pair = {i for i in by_value[value] if catalogue.decade(i) == decade}
        negatable = sorted(v for v in values if v != value and MIN_NEGATED <= len(pair & by_value[v])
                           and len(pair - by_value[v]) >= MIN_LEFT)
        if not negatable:
            continue
        not_value = negatable[rng.integers(len(negatable))]
        pointer = int(rng.integers(len(ORDINALS)))
        turns = (_article(VALUE_TEMPLATES[rng.integers(len(VALUE_TEMPLATES))].format(v=value.lower())),
                 _decade_words(decade, rng),
                 NEGATION_TEMPLATES[rng.integers(len(NEGATION_TEMPLATES))].format(v=not_value.lower()),
                 POINTER_TEMPLATES[rng.integers(len(POINTER_TEMPLATES))].format(nth=ORDINALS[pointer]))
        active = (Active(value), Active(value, decade), Active(value, decade, not_value),
                  Active(value, decade, not_value))
        out.append(Dialogue(turns, active, pointer))
    return out


class Client:
    """Recommend calls for one condition: which user and session each turn goes to, and how its text is
    sent."""

    def __init__(self, stub: gw_grpc.GatewayServiceStub, condition: str) -> None:
        self.stub = stub
        self.condition = condition
        self.user = self.session = ""
        self.said: list[str] = []
        self.latencies_ms: list[float] = []
        self.new_dialogue()

    def new_dialogue(self) -> None:
        self.user, self.session, self.said = f"bench-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex, []

    def ask(self, text: str) -> gw.RecommendResponse:
        self.said.append(text)
        if self.condition == "session":
            request = gw.RecommendRequest(user_id=self.user, session_id=self.session, query=text, k=TOP)
        elif self.condition in ("last turn only", "single turn"):
            request = gw.RecommendRequest(user_id=f"bench-{uuid.uuid4().hex[:12]}", session_id=uuid.uuid4().hex,
                                          query=text, k=TOP)
        elif self.condition == "no session":
            request = gw.RecommendRequest(user_id=f"bench-{uuid.uuid4().hex[:12]}", query=text, k=TOP)
        else:
            request = gw.RecommendRequest(user_id=f"bench-{uuid.uuid4().hex[:12]}", k=TOP,
                                          query=". ".join(t for t in self.said if t))
        started = time.perf_counter()
        reply = self.stub.Recommend(request, timeout=30)
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        return reply

    def reject(self, item_ids: list[str]) -> None:
        """Only a session remembers rejections; the single-turn baselines send a new cold user each turn."""
        if self.condition == "session" and item_ids:
            self.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
                gw.FeedbackEvent(user_id=self.user, item_id=i, event_type=gw.EVENT_TYPE_DISMISS,
                                 session_id=self.session) for i in item_ids]), timeout=30)


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


class CoRating:
    """Item-to-item cosine over who interacted with what: a notion of "like that item" that owes nothing
    to the model being measured."""

    def __init__(self, dataset: Dataset) -> None:
        users = {u: n for n, u in enumerate(sorted({x.user_id for x in dataset.interactions}))}
        self.index = {i.item_id: n for n, i in enumerate(dataset.items)}
        matrix = np.zeros((len(self.index), len(users)), dtype=np.float32)
        for x in dataset.interactions:
            if x.item_id in self.index:
                matrix[self.index[x.item_id], users[x.user_id]] = 1.0
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self.unit = matrix / np.maximum(norms, 1e-12)

    def mean_to(self, item_id: str, others: list[str]) -> float:
        rows = [self.index[o] for o in others if o in self.index and o != item_id]
        if item_id not in self.index or not rows:
            return 0.0
        return float((self.unit[rows] @ self.unit[self.index[item_id]]).mean())


def run_dialogues(stub, catalogue: Catalogue, dialogues: list[Dialogue], corating: CoRating) -> dict:
    out: dict = {}
    for condition in CONDITIONS:
        client = Client(stub, condition)
        satisfied = [[] for _ in range(4)]
        lengths = [[] for _ in range(4)]
        for dialogue in dialogues:
            client.new_dialogue()
            for t, (text, active) in enumerate(zip(dialogue.turns, dialogue.active)):
                ids = [i.item_id for i in client.ask(text).items][:TOP]
                lengths[t].append(len(ids))
                satisfied[t].append(sum(active.met_by(catalogue, i) for i in ids) / len(ids) if ids else 0.0)
        out[condition] = {
            "per_turn": [{"turn": t + 1, "constraint_satisfaction@10": round(float(np.mean(satisfied[t])), 4),
                          "share_of_dialogues_fully_satisfied": round(float(np.mean(np.isclose(satisfied[t], 1.0))), 4),
                          "mean_list_length": round(float(np.mean(lengths[t])), 2)} for t in range(4)],
            "latency_ms_p50": round(statistics.median(client.latencies_ms), 1),
        }
        print(condition, json.dumps(out[condition]["per_turn"]), flush=True)
    out["session"]["pointer_effect"] = pointer_effect(stub, catalogue, dialogues, corating)
    return out


def pointer_effect(stub, catalogue: Catalogue, dialogues: list[Dialogue], corating: CoRating) -> dict:
    """How far "more like the n-th one" moves turn 4's list toward that item, against a control session
    whose turn 4 says nothing (same turns 1-3, so the same lists and the same pointed item)."""
    sims: dict[str, dict[str, list[float]]] = {m: {"pointer": [], "control": []} for m in ("corating", "jaccard")}
    for dialogue in dialogues:
        for arm, last in (("pointer", dialogue.turns[3]), ("control", "")):
            client = Client(stub, "session")
            lists = [[i.item_id for i in client.ask(text).items][:TOP] for text in (*dialogue.turns[:3], last)]
            if len(lists[2]) <= dialogue.pointer:
                continue
            pointed = lists[2][dialogue.pointer]
            sims["corating"][arm].append(corating.mean_to(pointed, lists[3]))
            sims["jaccard"][arm].append(float(np.mean([_jaccard(catalogue.values(pointed), catalogue.values(i))
                                                       for i in lists[3]] or [0.0])))
    return {f"{metric}@10": {arm: round(float(np.mean(v)), 4) for arm, v in arms.items()}
            for metric, arms in sims.items()} | {"dialogues": len(sims["corating"]["pointer"])}


@dataclass
class SimulatedUser:
    """A hidden target and the true attributes it can still state, in the order it states them."""

    target: str
    to_state: list[tuple[str, str, str]] = field(default_factory=list)  # (key, value, text)

    @classmethod
    def for_target(cls, catalogue: Catalogue, target: str, rng: np.random.Generator) -> SimulatedUser:
        values = sorted(catalogue.values(target))
        rng.shuffle(values)
        said = [(catalogue.key, v, _article(VALUE_TEMPLATES[rng.integers(len(VALUE_TEMPLATES))].format(v=v.lower())))
                for v in values]
        decade, year = catalogue.decade(target), catalogue.year(target)
        if decade is not None:
            said.append((catalogue.year_key, f"{decade}..{decade + 9}", decade_text(decade)))
        if year is not None:
            said.append((catalogue.year_key, str(year), f"from {year}"))
        return cls(target, said)

    def next_text(self, refinements) -> tuple[str, bool]:
        """A suggested refinement true of the target if one is offered (and True), else the next attribute;
        "" when nothing is left to say (the turn then only carries the rejections)."""
        for chip in refinements:
            for n, (key, value, _) in enumerate(self.to_state):
                if chip.key == key and chip.value == value:
                    del self.to_state[n]
                    return chip.text, True
        return (self.to_state.pop(0)[2] if self.to_state else ""), False


def simulate(stub, catalogue: Catalogue, targets: list[str], seed: int) -> dict:
    out: dict = {}
    for condition in SIM_CONDITIONS:
        rng = np.random.default_rng(seed)  # every condition meets the same users saying the same things
        client = Client(stub, condition)
        found_at: list[int | None] = []
        chips_taken = 0
        for target in targets:
            user = SimulatedUser.for_target(catalogue, target, rng)
            client.new_dialogue()
            (text, _), found = user.next_text(()), None
            for t in range(1, MAX_TURNS + 1):
                reply = client.ask(text)
                ids = [i.item_id for i in reply.items][:TOP]
                if target in ids:
                    found = t
                    break
                client.reject(ids)
                text, from_chip = user.next_text(reply.refinements)
                chips_taken += from_chip
            found_at.append(found)
        hits = [f for f in found_at if f is not None]
        out[condition] = {
            "success@5": round(len(hits) / len(found_at), 4),
            "success_by_turn": [round(sum(f is not None and f <= t for f in found_at) / len(found_at), 4)
                                for t in range(1, MAX_TURNS + 1)],
            "mean_turns_to_success": round(float(np.mean(hits)), 2) if hits else None,
            "mean_turns_failures_as_6": round(float(np.mean([f or MAX_TURNS + 1 for f in found_at])), 2),
            "refinements_chosen": chips_taken,
            "latency_ms_p50": round(statistics.median(client.latencies_ms), 1),
        }
        print(condition, json.dumps(out[condition]), flush=True)
    return out


def draw_targets(dataset: Dataset, n: int, rng: np.random.Generator, uniform: bool = False) -> list[str]:
    """Distinct targets drawn from the interactions (in proportion to popularity, the protocol's draw), or
    with `uniform` from the catalogue's items with at least one interaction (long-tail targets)."""
    items = [x.item_id for x in dataset.interactions]
    if uniform:
        items = sorted(set(items), key=int) if all(i.isdigit() for i in items) else sorted(set(items))
    order = rng.permutation(len(items))
    chosen: list[str] = []
    for i in order:
        if items[i] not in chosen:
            chosen.append(items[i])
        if len(chosen) == n:
            break
    return chosen


@contextmanager
def running_system(bundle: Path, dataset: Dataset) -> Iterator[str]:
    """The three services on free ports with the catalogue and histories loaded, the way `make run`
    loads them; yields the gateway address."""
    with tempfile.TemporaryDirectory(prefix="lmrec-conversation-") as tmp:
        state = Path(tmp)
        layout = SystemLayout(state_dir=state, bundle_dir=bundle, gateway_port=0, ranking_port=0, retrieval_port=0,
                              dimension=load_manifest(bundle, verify_checksums=False).served_dimension)
        group = ProcessGroup(state / "run")
        try:
            os.environ.update(local_token_env("conversation-eval"))
            gateway = start_system(group, layout)
            with gateway_channel(gateway.address) as channel:
                load_catalog(gw_grpc.GatewayServiceStub(channel), dataset, progress=lambda m: None)
            yield gateway.address
        finally:
            group.stop_all()


def evaluate(address: str, dataset: Dataset, n_dialogues: int, n_users: int, seed: int,
             log: Callable[[str], None] = print) -> dict:
    catalogue = Catalogue.of(dataset)
    rng = np.random.default_rng(seed)
    dialogues = generate_dialogues(catalogue, n_dialogues, rng)
    targets = draw_targets(dataset, n_users, rng)
    uniform_targets = draw_targets(dataset, n_users, rng, uniform=True)
    with gateway_channel(address) as channel:
        stub = gw_grpc.GatewayServiceStub(channel)
        model_version = stub.Recommend(gw.RecommendRequest(user_id="bench-probe", k=1, query="a movie"),
                                       timeout=30).model_version
        log(f"{len(dialogues)} dialogues, {len(targets)} simulated users, model {model_version}")
        started = time.perf_counter()
        scripted = run_dialogues(stub, catalogue, dialogues, CoRating(dataset))
        simulated = simulate(stub, catalogue, targets, seed)
        log("targets drawn uniformly from the catalogue:")
        uniform = simulate(stub, catalogue, uniform_targets, seed)
    session_turns = [t["constraint_satisfaction@10"] for t in scripted["session"]["per_turn"]]
    single = simulated["single turn"]["success@5"]
    ratio = simulated["session"]["success@5"] / single if single else None
    return {
        "model_version": model_version, "seed": seed, "attribute_key": catalogue.key,
        "time_key": catalogue.year_key, "seconds": round(time.perf_counter() - started, 1),
        "dialogues": {"count": len(dialogues),
                      "distinct_constraint_sets": len({d.active[2] for d in dialogues}),
                      "examples": [list(d.turns) for d in dialogues[:5]], "conditions": scripted},
        "simulation": {"users": len(targets), "max_turns": MAX_TURNS, "top": TOP, "conditions": simulated,
                       "uniform_targets": {"users": len(uniform_targets), "conditions": uniform}},
        "targets": {"constraint_satisfaction@10_every_turn_at_least_0.9": min(session_turns) >= 0.9,
                    "session_success@5_over_single_turn": round(ratio, 2) if ratio is not None else None,
                    "success@5_at_least_twice_single_turn": ratio is not None and ratio >= 2.0},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default artifacts/lmrec-ml100k); with "
                        "--target, the one that target serves (names the run)")
    parser.add_argument("--data")
    parser.add_argument("--target", help="a running gateway with the catalogue loaded (else one is started)")
    parser.add_argument("--dialogues", type=int, default=200)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/evaluation/ml-100k_conversation.json"))
    args = parser.parse_args(argv)
    dataset = load_dataset(resolve_data_path(args.data))
    started = time.perf_counter()
    if args.target:
        run = evaluate(args.target, dataset, args.dialogues, args.users, args.seed)
        run["served_at"] = args.target
    else:
        with running_system(args.bundle or DEFAULT_BUNDLE, dataset) as address:
            run = evaluate(address, dataset, args.dialogues, args.users, args.seed)
    bundle = args.bundle or (None if args.target else DEFAULT_BUNDLE)
    run["bundle"] = str(bundle) if bundle else None
    run["seconds_total"] = round(time.perf_counter() - started, 1)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update({"dataset": dataset.name, "machine": describe_machine()})
    result.setdefault("runs", {})[bundle.name if bundle else run["model_version"]] = run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
