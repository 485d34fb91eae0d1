"""The stage bar moves per generation batch, not only per finished shard."""

from generators.parsing import generate_parsed
from pipelines.llm.base import Sampling
from pipelines.progress import StageBar


class Batched:
    """A fake backend that answers in batches of 2 and reports each batch."""

    name, model_id, model = "fake", "fake", None

    def generate(self, prompts, sampling, progress=None):
        for start in range(0, len(prompts), 2):
            if progress:
                progress(len(prompts[start : start + 2]))
        return [f"answer {i}" for i in range(len(prompts))]


def test_bar_counts_batches_while_active():
    bar = StageBar("test", total=5, enabled=False)
    seen = []
    with bar.active():
        generate_parsed(Batched(), list(range(5)), str, lambda t, _: t, Sampling(), progress=seen.append)
    assert seen == [2, 2, 1] and bar.generated == 5
    generate_parsed(Batched(), [1, 2], str, lambda t, _: t, Sampling())  # no active bar: nothing counted
    assert bar.generated == 5
