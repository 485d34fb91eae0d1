"""The stage bar moves per generation batch, not only per finished shard."""

from generators.parsing import generate_parsed
from pipelines.llm.base import Sampling
from pipelines.progress import StageBar


def test_bar_counts_batches_while_active(fake_llm):
    llm = fake_llm(lambda ask: f"answer {ask.text}", batch_size=2)  # reports each batch of 2
    bar = StageBar("test", total=5, enabled=False)
    seen = []
    with bar.active():
        generate_parsed(llm, list(range(5)), str, lambda t, _: t, Sampling(), progress=seen.append)
    assert seen == [2, 2, 1] and bar.generated == 5
    generate_parsed(llm, [1, 2], str, lambda t, _: t, Sampling())  # no active bar: nothing counted
    assert bar.generated == 5
