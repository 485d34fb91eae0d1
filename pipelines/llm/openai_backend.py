"""Backend for any OpenAI-compatible HTTP endpoint (a vLLM server, a hosted model, pipelines.llm.serve).

    from pipelines.llm import make_backend
    llm = make_backend("openai", model="served-name", base_url="http://127.0.0.1:8000/v1",
                       concurrency=8, max_retries=5, timeout=60, tokenizer="embedded")

* ``generate``: chat prompts go to ``/chat/completions``, raw strings to ``/completions``; up to
  ``concurrency`` requests in flight (threads sharing one pooled ``httpx.Client``). Request ``i``
  carries ``seed = sampling.seed * 1_000_003 + i`` so identical prompts sampled at temperature > 0
  still differ, and the same call gives the same texts on a seeded server.
* Retries: HTTP 408/409/429/5xx, timeouts, connection errors (refused, reset mid-body) and a 200
  whose body is not the JSON layout asked for (generate) are retried up to ``max_retries`` times
  with exponential backoff (``backoff * 2**attempt`` seconds, capped at ``max_backoff``, jittered
  to 50-100%), waiting at least the server's ``Retry-After`` in seconds (itself capped at
  ``max_backoff``). Other 4xx are not retried.
* Usage: every call adds the server's ``usage`` token counts, the items asked, the retries and the
  items that failed for good to ``self.usage`` and to the open ledgers (pipelines/llm/usage.py).
  A count that is not a non-negative number (``"n/a"``, null) is unknown: 0 tokens, the answer kept.
* Failures: ``generate``/``loss`` raise :class:`RequestFailed` (which prompt, HTTP status,
  attempts, server message) as soon as one request has exhausted its retries. Callers that
  want per-item failures -- to put them into a rejects file and keep the rest -- call
  ``generate_results``/``loss_results``, which return a ``RequestFailed`` in place of each failed
  item. Messages name the endpoint without its credentials (pipelines/redact.py: no userinfo, no
  query string), so a reject, a log line or a traceback never holds a secret of ``base_url``.
* ``loss`` uses ``/completions`` with ``echo=True, logprobs=1`` (vLLM's way to return prompt
  logprobs) and ``max_tokens=1`` (vLLM rejects 0 in some versions; the one generated token is
  ignored). With ``tokenizer`` set (a tokenizer object, a local folder, ``embedded`` or
  ``tiny``), prompt and completion are tokenised apart exactly as ``pipelines.llm.nll.encode``
  does (chat prompts through the chat template) and sent as token ids, so the result matches the
  hf backend. Without a tokenizer only string prompts can be scored: the joined text is sent and
  completion tokens are those whose ``text_offset`` is at or after the prompt's end (a token
  merging across the boundary counts as prompt); chat prompts then raise NotImplementedError.
  Prefix caching must be off on a vLLM server for prompt logprobs (``--no-enable-prefix-caching``).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import httpx
import numpy as np

from pipelines.llm.base import LossRequest, LossResult, Progress, Prompt, Sampling, no_extras
from pipelines.llm.openai_wire import (
    RETRY_STATUSES,
    RequestFailed,
    chat_text,
    completion_text,
    response_format,
    token_count,
    token_logprobs,
)
from pipelines.llm.usage import Usage, record
from pipelines.redact import redact_url

__all__ = ["OpenAIBackend", "RequestFailed", "response_format"]

class OpenAIBackend:
    name = "openai"
    structured_output = True  # decoding constrained to Sampling.json_schema

    def __init__(
        self,
        model: str = "default",
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        tokenizer: Any = None,
        max_length: int = 1024,
        extra_body: dict[str, Any] | None = None,
    ):
        """``base_url`` defaults to $OPENAI_BASE_URL, else http://127.0.0.1:8000/v1; ``api_key``
        to $OPENAI_API_KEY, else "EMPTY" (local servers ignore it). ``extra_body`` is merged into
        every request (e.g. vLLM's ``{"top_k": 20}``)."""
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.model_id = model
        self.model = None  # remote: no in-process weights
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1").rstrip(
            "/"
        )
        self.shown_url = redact_url(self.base_url)  # for messages: no userinfo, no query string
        self.concurrency, self.max_retries, self.timeout = concurrency, max_retries, timeout
        self.backoff, self.max_backoff = backoff, max_backoff
        self.max_length, self.extra_body = max_length, dict(extra_body or {})
        self._tokenizer_spec, self._tokenizer = tokenizer, None
        self._tokenizer_lock = threading.Lock()
        self.usage = Usage()  # running total of this backend's calls (pipelines/llm/usage.py)
        self._sleep = time.sleep  # the backoff wait (tests record it instead)
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"},  # never logged
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- HTTP with retries ----------------------------------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.max_backoff))
            except ValueError:
                pass  # an HTTP date: keep our own backoff
        return delay

    def _post(self, path: str, body: dict[str, Any], index: int, tally: Usage | None = None,
              extract: Callable[[dict[str, Any]], Any] | None = None) -> Any:
        """POST with retries; returns the JSON body, or ``extract(body)`` when given (a layout
        error there -- KeyError, IndexError, TypeError -- is retried like a malformed body).
        ``tally`` gets the retries and the server's token counts."""
        body = {**self.extra_body, **body}
        tally = tally if tally is not None else Usage()
        failure: RequestFailed | None = None
        for attempt in range(self.max_retries + 1):
            response = None
            if attempt:
                tally.add(Usage(retries=1))
            try:
                response = self._client.post(path, json=body)
            except httpx.TimeoutException:
                failure = RequestFailed(
                    index, f"timed out after {self.timeout}s ({self.shown_url}{path})", None, attempt + 1
                )
            except httpx.TransportError as e:
                failure = RequestFailed(
                    index, f"connection error to {self.shown_url}{path}: {e}", None, attempt + 1
                )
            else:
                if response.status_code == 200:
                    try:
                        data = response.json()
                        result = extract(data) if extract is not None else data
                    except ValueError:
                        failure = RequestFailed(
                            index, f"response is not JSON: {response.text[:300]!r}", 200, attempt + 1
                        )
                    except (KeyError, IndexError, TypeError) as e:
                        failure = RequestFailed(
                            index, f"unexpected response layout ({type(e).__name__}: {e}): "
                            f"{response.text[:300]!r}", 200, attempt + 1)
                    else:
                        counts = data.get("usage") if isinstance(data, dict) else None
                        if isinstance(counts, dict):
                            tally.add(Usage(prompt_tokens=token_count(counts.get("prompt_tokens")),
                                            completion_tokens=token_count(counts.get("completion_tokens"))))
                        return result
                    if attempt < self.max_retries:
                        self._sleep(self._delay(attempt, None))
                    continue
                failure = RequestFailed(
                    index,
                    f"HTTP {response.status_code} from {self.shown_url}{path}: {response.text[:500]}",
                    response.status_code,
                    attempt + 1,
                )
                if response.status_code not in RETRY_STATUSES:
                    raise failure
            if attempt < self.max_retries:
                self._sleep(self._delay(attempt, response))
        assert failure is not None
        raise failure

    def _map(self, fn: Callable[[int, Any, Usage], Any], items: Sequence[Any], fail_fast: bool,
             progress: Progress | None = None) -> list[Any]:
        """``fn(i, item, tally)`` for every item with at most ``concurrency`` in flight; results in
        order. The items' usage (tokens, retries, failures, seconds) is recorded once, here.

        fail_fast: raise the first RequestFailed and cancel what has not started; otherwise a
        RequestFailed takes the failed item's place.
        """
        tally, started = Usage(), time.perf_counter()
        try:
            out = self._map_items(fn, items, fail_fast, tally)
        finally:
            tally.seconds = time.perf_counter() - started
            record(self, tally)
        if progress:
            progress(len(out))
        return out

    def _map_items(self, fn: Callable[[int, Any, Usage], Any], items: Sequence[Any], fail_fast: bool,
                   tally: Usage) -> list[Any]:
        out: list[Any] = [None] * len(items)
        if not items:
            return out

        def one(i: int, item: Any) -> Any:
            tally.add(Usage(calls=1))
            try:
                return fn(i, item, tally)
            except RequestFailed:
                tally.add(Usage(failures=1))
                raise

        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(items)), thread_name_prefix="openai"
        ) as pool:
            futures = {pool.submit(one, i, item): i for i, item in enumerate(items)}
            if fail_fast:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    for f in futures:
                        f.cancel()
                    raise min(failed, key=lambda f: futures[f]).exception()
            for f, i in futures.items():
                try:
                    out[i] = f.result()
                except RequestFailed as e:
                    out[i] = e
        return out

    # --- generate -------------------------------------------------------------------------------

    def _generate_one(self, index: int, prompt: Prompt, sampling: Sampling, tally: Usage) -> str:
        body: dict[str, Any] = {
            "model": self.model_id,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed * 1_000_003 + index,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.json_schema is not None:
            body["response_format"] = response_format(sampling.json_schema)
        if isinstance(prompt, str):
            text = self._post("/completions", {**body, "prompt": prompt}, index, tally, completion_text)
        else:
            text = self._post("/chat/completions", {**body, "messages": list(prompt)}, index, tally, chat_text)
        return (text or "").strip()  # same convention as the hf backend

    def generate_results(self, prompts: Sequence[Prompt], sampling: Sampling,
                         progress: Progress | None = None) -> list[str | RequestFailed]:
        """Texts in input order, with a RequestFailed in place of each prompt that failed for good."""
        return self._map(lambda i, p, t: self._generate_one(i, p, sampling, t), list(prompts),
                         fail_fast=False, progress=progress)

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling, progress: Progress | None = None) -> list[str]:
        """Texts in input order; raises RequestFailed when any prompt fails for good."""
        return self._map(lambda i, p, t: self._generate_one(i, p, sampling, t), list(prompts),
                         fail_fast=True, progress=progress)

    # --- loss -----------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The tokenizer given as ``tokenizer=`` (loaded on first use), or None."""
        spec = self._tokenizer_spec
        if spec is None or not isinstance(spec, str):
            return spec
        with self._tokenizer_lock:
            if self._tokenizer is None:
                if spec == "tiny":
                    from pipelines.llm.tiny import tiny_tokenizer

                    self._tokenizer = tiny_tokenizer()
                else:
                    from transformers import AutoTokenizer

                    from pipelines.llm.embedded import resolve_model_path

                    self._tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(spec))
        return self._tokenizer

    def _loss_one(self, index: int, request: LossRequest, tally: Usage) -> LossResult:
        body = {"model": self.model_id, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0.0}
        tok = self.tokenizer
        if tok is not None:
            from pipelines.llm.nll import encode

            enc = encode(tok, request, max_length=self.max_length)
            ids = enc.prompt_ids + enc.completion_ids
            data = self._post("/completions", {**body, "prompt": ids}, index, tally)
            values = token_logprobs(data, index)
            if len(values) < len(ids):
                raise RequestFailed(
                    index, f"server returned {len(values)} prompt logprobs for {len(ids)} tokens", 200
                )
            picked = values[len(enc.prompt_ids) : len(ids)]
        else:
            if not isinstance(request.prompt, str):
                raise NotImplementedError(
                    "OpenAIBackend.loss with a chat prompt needs the model's chat template: "
                    "pass tokenizer=<local model folder, 'embedded' or a tokenizer object>"
                )
            if not request.prompt:
                raise NotImplementedError(
                    "an empty prompt conditions on the start token: pass tokenizer= to score it"
                )
            full = request.prompt + request.completion
            data = self._post("/completions", {**body, "prompt": full}, index, tally)
            values = token_logprobs(data, index)
            offsets = data["choices"][0]["logprobs"].get("text_offset") or []
            if len(offsets) != len(values):
                raise RequestFailed(index, "server returned no usable text_offset for its logprobs", 200)
            start = len(request.prompt)
            picked = [v for v, o in zip(values, offsets, strict=True) if start <= o < len(full)]
        if any(v is None for v in picked):
            raise RequestFailed(index, "server returned null logprobs for completion tokens", 200)
        return LossResult(-np.asarray(picked, dtype=np.float64))

    def loss_results(self, requests: Sequence[LossRequest]) -> list[LossResult | RequestFailed]:
        """Per-token completion NLLs in input order, with a RequestFailed for each failed item."""
        return self._map(self._loss_one, list(requests), fail_fast=False)

    def loss(self, requests: Sequence[LossRequest], want_hidden: bool = False, attn_layer: int | None = None,
             progress: Progress | None = None) -> list[LossResult]:
        """Per-token completion NLLs in input order; raises RequestFailed when any item fails."""
        no_extras(self.name, want_hidden, attn_layer)
        return self._map(self._loss_one, list(requests), fail_fast=True, progress=progress)
