"""Generators: write instruction data with an LLM, level by level, resumable and auditable.

| module        | what                                                                      |
|---------------|---------------------------------------------------------------------------|
| taxonomy.py   | load and validate a taxonomy (own YAML, NCSES, CIP 2020, flat list)        |
| glan.py       | GLAN: disciplines -> subjects -> syllabus -> questions -> answers          |
| glan_*.py     | GLAN's pieces: schema, prompts, parse, sampling, level_run, levels         |
| bonito.py     | Bonito: passage + task type -> instruction and response (bonito/chat mode) |
| bonito_*.py   | Bonito's pieces: template (task types, bonito mode), chat (chat mode)      |
| parsing.py    | JSON repair, line formats, whole-answer refusal checks, bounded retries    |
| levels.py     | a level = a folder of shards, redone only where its input changed         |
| dedup.py      | near-duplicate removal (normalised hash + MinHash) with counts            |
| refusal.py    | R-Tuning: suffix rows "I am sure/unsure" by whether the model knows them   |
| refusal_certainty.py | R-Tuning's strings, judge, evaluation + the fine-tuning extra_eval hook |

Transforms (rows in, the same rows changed out, e.g. R-Tuning's ``refusal.py``) live here too:
they ask a model like a generator does and sit in the same layer, above the core (``pipelines/``
knows no method: fine-tuning evaluation takes a method's evaluation as a hook).

    python -m generators.glan data/taxonomy.yaml runs/glan --max-disciplines 2
    python -m generators.bonito_cli data/passages.jsonl runs/bonito --task-types exqa qa
"""
