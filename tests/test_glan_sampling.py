"""GLAN's key-concept sampling, both modes of the paper: one session with 1..min(5, m) of its
concepts, or two sessions with 2..min(5, m1+m2) from their union."""

from __future__ import annotations

import random

import pytest

from generators.glan_sampling import sample_concepts


def _sessions(*sizes):
    return [{"title": f"s{i}", "key_concepts": [f"c{i}.{j}" for j in range(n)]} for i, n in enumerate(sizes)]


@pytest.mark.parametrize("m", [1, 3, 7])
def test_one_session_mode_draws_1_to_min_5_m_from_one_session(m):
    sessions = _sessions(m, m)
    ks = set()
    for s in range(300):
        picked, concepts = sample_concepts(sessions, random.Random(s), "one")
        assert len(picked) == 1 and set(concepts) <= set(sessions[picked[0]]["key_concepts"])
        assert len(set(concepts)) == len(concepts)
        ks.add(len(concepts))
    assert ks == set(range(1, min(5, m) + 1))


@pytest.mark.parametrize("m1, m2", [(1, 1), (1, 2), (4, 6)])
def test_two_session_mode_draws_2_to_min_5_m1_m2_from_the_union(m1, m2):
    sessions = _sessions(m1, m2, 3)
    ks = set()
    for s in range(300):
        picked, concepts = sample_concepts(sessions, random.Random(s), "two")
        assert len(picked) == 2 and picked[0] != picked[1]
        union = set(sessions[picked[0]]["key_concepts"]) | set(sessions[picked[1]]["key_concepts"])
        assert set(concepts) <= union and len(set(concepts)) == len(concepts)
        ks.add(len(concepts))
        assert 2 <= len(concepts) <= 5
    if (m1, m2) == (1, 1):  # the pair (0, 1) has 2 concepts; pairs with session 2 have 4
        assert ks == {2, 3, 4}
    if (m1, m2) == (4, 6):
        assert ks == {2, 3, 4, 5}


def test_two_session_mode_with_overlapping_single_concepts():
    sessions = [{"title": "a", "key_concepts": ["x"]}, {"title": "b", "key_concepts": ["x"]}]
    picked, concepts = sample_concepts(sessions, random.Random(0), "two")
    assert picked == [0, 1] and concepts == ["x"]  # the union has one concept: all of it


def test_one_session_syllabus_falls_back_to_one_mode():
    picked, concepts = sample_concepts(_sessions(3), random.Random(0), "two")
    assert picked == [0] and 1 <= len(concepts) <= 3
