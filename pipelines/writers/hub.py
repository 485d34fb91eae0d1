"""Upload an export folder (or a Dataset) to a Hub dataset repo: data, card prose and plots.

    push_to_hub("runs/x/dataset", "me/my-dataset")      # token from HF_TOKEN; private by default

``datasets``' ``push_to_hub`` writes the data and README.md's YAML header (features, splits,
data files); a second commit puts the card's prose under that header and uploads the card's
images (``plots/*.png``), so they show on the Hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets


def push_to_hub(
    export: str | Path | datasets.Dataset,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    card_text: str | None = None,
) -> dict[str, Any]:
    """Upload an export folder (or a Dataset) to a Hub dataset repo, then put the card prose on it.

    The token comes from ``token`` or the environment (``HF_TOKEN``, else a saved ``hf auth
    login``); it is passed to the Hub client only -- never printed, logged or written. The repo is
    created private by default, and pushing with ``private=True`` to an existing *public* repo is
    refused rather than publishing the data. The card prose is ``card_text``, else the export's
    README.md. The card's images (the export's ``plots/*.png``) go in the card's commit.
    Returns {"repo_id", "url", "commit", "private"} (JSON-able, no token).
    """
    import datasets
    from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, get_token

    token = token or get_token()
    if not token:
        raise RuntimeError(
            "pushing to the Hub needs a token: set HF_TOKEN (a write token) in the environment"
        )
    plots: list[Path] = []
    if isinstance(export, datasets.Dataset):
        ds = export
    else:
        folder = Path(export)
        ds = datasets.load_from_disk(str(folder / "hf"))
        if (folder / "test" / "hf").exists():  # export.test_fraction: push both splits
            ds = datasets.DatasetDict(train=ds, test=datasets.load_from_disk(str(folder / "test" / "hf")))
        if card_text is None and (folder / "README.md").exists():
            card_text = (folder / "README.md").read_text(encoding="utf-8")
        plots = sorted((folder / "plots").glob("*.png"))

    api = HfApi(token=token, library_name="instruct-forge")
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
    if private and not api.repo_info(repo_id, repo_type="dataset").private:
        raise RuntimeError(
            f"{repo_id} exists and is public; refusing to push with private=True "
            "(make it private on the Hub, or pass private=False to publish)"
        )
    # Two commits; a rerun after either fails pushes both again: datasets writes the same shard
    # names (replacing, not adding, files) and the card commit replaces README.md.
    rerun = "run the same command again to finish the push (it replaces, never duplicates, files)"
    try:
        commit = ds.push_to_hub(repo_id, private=private, token=token, commit_message="Upload dataset")
    except Exception as e:
        raise RuntimeError(f"pushing the dataset to {repo_id} failed ({type(e).__name__}: {e}); {rerun}") from e
    if card_text or plots:
        # datasets just wrote README.md with the YAML header (features, splits, data files); keep
        # that header and replace the body with our prose. The plots the prose shows go with it.
        try:
            ops = [CommitOperationAdd(path_in_repo=f"plots/{p.name}", path_or_fileobj=p.read_bytes())
                   for p in plots]
            if card_text:
                readme = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=commit.oid)
                card = DatasetCard(Path(readme).read_text(encoding="utf-8"))
                card.text = card_text
                ops.insert(0, CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode("utf-8")))
            commit = api.create_commit(
                repo_id,
                operations=ops,
                commit_message="Dataset card",
                repo_type="dataset",
                parent_commit=commit.oid,
            )
        except Exception as e:
            raise RuntimeError(
                f"pushing the dataset card to {repo_id} failed ({type(e).__name__}: {e}); the data is on "
                f"the Hub (commit {commit.oid}) without the card's prose; {rerun}") from e
    return {
        "repo_id": repo_id,
        "url": f"{api.endpoint}/datasets/{repo_id}",
        "commit": commit.oid,
        "private": private,
    }
