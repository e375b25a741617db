"""The report's conversation section, rendered from what bench/conversation_eval.py measured.

Reads `<out_dir>/<dataset>_conversation.json` when it exists (the bench writes it; nothing here measures),
so the figures in docs/evaluation.md are always the last measured ones.
"""

from __future__ import annotations

import json
from pathlib import Path

CONDITION_NOTES = {
    "session": "`session_id` kept over the turns",
    "last turn only": "a new session each turn: the turn is read, nothing remembered",
    "single turn": "a new session and a new cold user each turn: the turn is read, nothing remembered",
    "no session": "the turn as plain free text, today's single-turn API",
    "concatenated text": "every turn so far joined into one free-text query, no session",
}


def conversation_section(dataset: str, out_dir: Path) -> list[str]:
    path = Path(out_dir) / f"{dataset}_conversation.json"
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    machine = result.get("machine", {})
    lines = ["### Conversation (sessions, critiques, refinements)", "",
             "`python bench/conversation_eval.py`, through the gateway's gRPC API with the catalogue and "
             "histories loaded, every user a new cold one (machine: "
             f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, no GPU"
             f"{'' if 'gpu' not in machine else ' used; ' + machine['gpu'] + ' present'}). Dialogues and "
             "simulated users are generated from the catalogue's attributes with a seed.", ""]
    for name, run in result.get("runs", {}).items():
        lines += _run(name, run)
    return lines


def _run(name: str, run: dict) -> list[str]:
    lines = [f"**Bundle `{name}`** (model {run['model_version']}, seed {run['seed']}, "
             f"{run.get('seconds_total', run['seconds'])} s).", ""]
    dialogues = run["dialogues"]
    conditions = dialogues["conditions"]
    lines += [f"*Scripted dialogues*: {dialogues['count']} four-turn dialogues over "
              f"`{run['attribute_key']}` and `{run['time_key']}` ({dialogues['distinct_constraint_sets']} distinct "
              "constraint sets): a value, then a decade, then a second value negated, then \"more like the "
              "n-th one\". E.g. " + "; ".join(" → ".join(f"“{t}”" for t in d) for d in dialogues["examples"][:2])
              + ". The wording comes from a few templates per turn kind, which the parser reads; free phrasing is "
              "not measured here. Constraint satisfaction@10 (share of the top 10 meeting every active constraint) "
              "per turn:", "",
              "| condition | turn 1 | turn 2 | turn 3 | turn 4 | p50 ms (client side) |",
              "|---|---|---|---|---|---|"]
    for condition, block in conditions.items():
        cells = " | ".join(f"{t['constraint_satisfaction@10']:.3f}" for t in block["per_turn"])
        lines.append(f"| {condition} ({CONDITION_NOTES.get(condition, '')}) | {cells} | {block['latency_ms_p50']} |")
    moved = conditions.get("session", {}).get("pointer_effect")
    if moved:
        co, jac = moved["corating@10"], moved["jaccard@10"]
        lines += ["", f"\"More like the n-th one\" (session, {moved['dialogues']} dialogues): turn 4's top 10 against "
                      f"the item pointed at, with the pointer vs a control session whose turn 4 is empty: mean "
                      f"co-rating cosine (who interacted with both; independent of the model) {co['pointer']:.3f} vs "
                      f"{co['control']:.3f}, mean `{run['attribute_key']}` Jaccard {jac['pointer']:.3f} vs "
                      f"{jac['control']:.3f}."]
    sim = run["simulation"]
    lines += ["", f"*Simulated users* (EAR/CRM protocol): {sim['users']} hidden targets drawn from the "
                  f"interactions; each turn the user rejects the shown items and states one more true attribute "
                  f"(a suggested refinement when one is true of the target), up to {sim['max_turns']} turns; success "
                  f"= the target in the top {sim['top']}.", "",
              "| condition | success@5 | by turn 1..5 | mean turns to success | the same, failures as 6 | "
              "refinements chosen |", "|---|---|---|---|---|---|"]
    for condition, block in sim["conditions"].items():
        by_turn = " / ".join(f"{s:.3f}" for s in block["success_by_turn"])
        turns = "–" if block["mean_turns_to_success"] is None else f"{block['mean_turns_to_success']:.2f}"
        note = CONDITION_NOTES.get(condition, "")
        lines.append(f"| {condition}{f' ({note})' if condition != 'session' else ''} | {block['success@5']:.3f} | "
                     f"{by_turn} | {turns} | {block['mean_turns_failures_as_6']:.2f} | {block['refinements_chosen']} |")
    uniform = sim.get("uniform_targets")
    if uniform:
        cells = ", ".join(f"{c} {b['success@5']:.3f}" for c, b in uniform["conditions"].items())
        lines += ["", f"With {uniform['users']} targets drawn uniformly from the items instead (the long tail, "
                      f"where popularity helps no condition), success@5: {cells}."]
    targets = run["targets"]
    ratio = targets["session_success@5_over_single_turn"]
    lines += ["", "Targets: constraint satisfaction@10 ≥ 0.9 at every turn (session): **"
              + ("met" if targets["constraint_satisfaction@10_every_turn_at_least_0.9"] else "missed")
              + "**; success@5 at least twice the single-turn baseline's: **"
              + ("met" if targets["success@5_at_least_twice_single_turn"] else "missed")
              + f"** ({'no single-turn success' if ratio is None else f'{ratio:.2f}×'}).", ""]
    return lines
