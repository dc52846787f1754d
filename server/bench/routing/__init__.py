"""`python -m server.bench.routing`: what routing between the small and the large model buys.

Every prompt runs once on each tier (the draft model alone, greedy; the target speculating with
the draft, greedy) and is scored by execution: HumanEval by its unit tests (pass@1), Spec-Bench's
`math_reasoning` (GSM8K questions) by the final number. The router's score terms are recorded per
prompt too. A policy's outcome then follows from those records alone, because the route a prompt
takes depends only on its score (and escalation only on the small answer's confidence), so every
threshold is evaluated offline, at no cost:

- small-only, large-only: one tier for everything;
- auto@t: the small model when score < t, else the large one; it pays the scoring forward;
- auto@t+esc@c: as auto@t, and a small answer with confidence < c is redone by the large model
  (it pays both runs).

Compute cost is in model-seconds (forward time of the models a tier runs; one device) and in
dollars at `--price-per-gpu-hour`. The run writes records.jsonl as it goes, then results.json, a
table (stdout and results.md) and the quality-versus-cost curve (routing.png) into the output
folder. `--records FILE` re-analyses an earlier run's records without loading a model.

Modules: `records` (what is kept per prompt), `run` (the model runs), `sweep` (policies replayed
over records), `report` (table, verdict, curve, files), `__main__` (the command line).
"""
