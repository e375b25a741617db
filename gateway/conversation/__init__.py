"""Conversational recommendation: a session of turns read against the loaded catalogue's own attributes.

One module per job: `vocabulary` (attribute values of the catalogue as phrases), `critique` (a turn's text
into constraints and item references), `constraints` (merging turns, newest winning, and what they mean
for retrieval), `refinements` (chips for broad answers), `sessions` (the durable store) and `turns` (the
per-request plan gateway/recommend.py applies). Decisions are pure functions over plain data.
"""
