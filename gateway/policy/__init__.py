"""The post-ranking stage of Recommend: what the user's feedback means, diversity, exploration with logged
propensities, reasons, and the per-scenario defaults that choose among them. Decisions are pure functions
over plain data (one module per concern); gateway/recommend.py calls them in order."""
