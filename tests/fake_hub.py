"""An in-memory Hugging Face Hub behind ``HfApi`` for the push tests (no network).

``HfApi`` is patched at its boundary (create_repo, repo_info, preupload_lfs_files, create_commit,
list_repo_tree, get_paths_info, hf_hub_download), as ``datasets``' own tests patch those calls,
and :func:`no_network` makes any socket connection fail while a test runs.
"""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest


class FakeHub:
    """In-memory Hub behind HfApi: records repo creation, uploads and commits."""

    def __init__(self):
        self.repos: dict[str, bool] = {}  # repo_id -> private
        self.files: dict[str, bytes] = {}
        self.uploaded: dict[str, bytes] = {}  # LFS pre-uploads, read before datasets deletes the temp file
        self.create_repo_calls: list[dict] = []
        self.commits: list[dict] = []
        self.tokens: set = set()

    def install(self, monkeypatch, tmp_path: Path) -> None:
        from huggingface_hub import CommitInfo, HfApi, RepoUrl
        from huggingface_hub.errors import EntryNotFoundError

        hub = self

        def create_repo(api, repo_id, *, repo_type=None, private=None, exist_ok=False, **kw):
            hub.tokens.add(api.token)
            hub.create_repo_calls.append({"repo_id": repo_id, "repo_type": repo_type, "private": private})
            hub.repos.setdefault(repo_id, bool(private))
            return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

        def repo_info(api, repo_id, *, repo_type=None, revision=None, **kw):
            return SimpleNamespace(id=repo_id, sha=f"{len(hub.commits):040d}", private=hub.repos[repo_id])

        def preupload_lfs_files(api, repo_id, additions, **kw):
            for op in additions:
                src = op.path_or_fileobj
                hub.uploaded[op.path_in_repo] = Path(src).read_bytes() if isinstance(src, str) else bytes(src)

        def create_commit(api, repo_id, operations, *, commit_message, parent_commit=None, **kw):
            hub.tokens.add(api.token)
            ops = []
            for op in operations:
                src = op.path_or_fileobj
                data = hub.uploaded[op.path_in_repo] if isinstance(src, str) else bytes(src)
                hub.files[op.path_in_repo] = data
                ops.append((type(op).__name__, op.path_in_repo, data))
            hub.commits.append(
                {"repo_id": repo_id, "message": commit_message, "parent": parent_commit, "ops": ops}
            )
            oid = f"{len(hub.commits):040d}"
            return CommitInfo(
                commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/{oid}",
                commit_message=commit_message,
                commit_description="",
                oid=oid,
            )

        def hf_hub_download(api, repo_id, filename, *, repo_type=None, revision=None, **kw):
            path = tmp_path / "hub-download" / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(hub.files[filename])
            return str(path)

        # HfFileSystem (which datasets uses to look for old shards and an old README) lists the
        # repo through these two; a missing folder is a 404 (EntryNotFoundError) on the real Hub.
        def list_repo_tree(api, repo_id, path_in_repo=None, *, recursive=False, **kw):
            prefix = (path_in_repo or "").strip("/")
            entries = [
                e
                for e in hub.entries()
                if _under(e.path, prefix) and (recursive or "/" not in e.path[len(prefix) :].lstrip("/"))
            ]
            if prefix and not entries:
                raise EntryNotFoundError(f"{prefix} does not exist")
            return iter(entries)

        def get_paths_info(api, repo_id, paths, **kw):
            paths = [paths] if isinstance(paths, str) else paths
            return [e for e in hub.entries() if e.path in paths]

        for name, fn in {
            "create_repo": create_repo,
            "repo_info": repo_info,
            "preupload_lfs_files": preupload_lfs_files,
            "create_commit": create_commit,
            "hf_hub_download": hf_hub_download,
            "list_repo_tree": list_repo_tree,
            "get_paths_info": get_paths_info,
        }.items():
            monkeypatch.setattr(HfApi, name, fn)

    def entries(self) -> list:
        """Every file and folder of the repo as the Hub's tree API returns them."""
        from huggingface_hub.hf_api import RepoFile, RepoFolder

        folders = {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}
        return [RepoFolder(path=f, oid="0" * 40) for f in sorted(folders)] + [
            RepoFile(path=p, size=len(d), oid="0" * 40) for p, d in sorted(self.files.items())
        ]


def _under(path: str, prefix: str) -> bool:
    return not prefix or path.startswith(prefix + "/")


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails: a call that slipped past the fake Hub shows up as an error."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
