"""The `openai` backend: any OpenAI-compatible /v1/completions endpoint that returns top
log-probabilities (vLLM serve, SGLang, llama.cpp server, `bench serve`, hosted APIs).

It only builds payloads and parses replies. Prompts arrive already rendered with the model's chat
template (the same `render()` as every backend). The API key comes from an environment variable
and is never stored in identities, manifests or logs."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np

from .backends import DIGITS, RatePrompt, Rating, llm_identity, rating_from_logprobs


class EndpointError(RuntimeError):
    pass


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1",
                 api_key_env: str = "OPENAI_API_KEY", batch_size: int = 16, timeout: float = 120,
                 retries: int = 3, top_logprobs: int = 20):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._key = os.environ.get(api_key_env, "")
        self.batch_size = batch_size
        self.timeout = timeout
        self.retries = retries
        self.top_n = top_logprobs  # hosted APIs cap this at 20
        self.identity = llm_identity(self.name, model, "auto", "server", self.base_url)
        self.settings = {**self.identity, "batch_size": batch_size, "top_logprobs": top_logprobs}

    def _post(self, payload: dict) -> dict:
        return self._request("completions", payload)

    def check(self) -> None:
        """Ask the endpoint for its models (GET /models), with the same retries and backoff as
        every call: an EndpointError if it cannot be reached or rejects the key. A reply of
        404 still proves a server is listening."""
        try:
            self._request("models", None)
        except EndpointError as exc:
            if "HTTP 404" not in str(exc):
                raise

    def _request(self, route: str, payload: dict | None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last, tries = None, 0
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(f"{self.base_url}/{route}", data=data, headers=headers)
            tries += 1
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
                if exc.code < 500 and exc.code != 429:
                    break  # a client error will not go away by retrying
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except http.client.HTTPException as exc:  # a reply cut off mid-body, a bad status line
                last = f"{type(exc).__name__}: {exc}"
            except ValueError:  # a proxy's HTML page
                last = "the reply is not JSON"
            if attempt < self.retries:
                time.sleep(min(2 ** attempt, 30))
        last = " ".join(str(last).split())  # one line, whatever the server sent
        raise EndpointError(f"{self.base_url}/{route} failed after {tries} "
                            f"{'try' if tries == 1 else 'tries'}: {last}")

    def rate(self, prompts: list[RatePrompt]) -> list[Rating]:
        out = []
        for lo in range(0, len(prompts), self.batch_size):
            batch = [p.text for p in prompts[lo:lo + self.batch_size]]
            reply = self._post({"model": self.model, "prompt": batch, "max_tokens": 1,
                                "temperature": 0, "logprobs": self.top_n})
            choices = sorted(reply["choices"], key=lambda c: c["index"])
            out += [self._rating(c) for c in choices]
        return out

    @staticmethod
    def _rating(choice: dict) -> Rating:
        """Sum the probability of every spelling of each digit among the returned top tokens; a
        digit outside the top list counts as zero (and lowers the reported mass)."""
        top = (choice.get("logprobs") or {}).get("top_logprobs") or [{}]
        probs = np.zeros(5)
        for token, lp in top[0].items():
            t = token.replace("▁", " ").strip()
            if t in DIGITS:
                probs[DIGITS.index(t)] += np.exp(lp)
        with np.errstate(divide="ignore"):
            return rating_from_logprobs(np.log(probs))

    def generate(self, texts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0) -> list[str]:
        out = []
        for lo in range(0, len(texts), self.batch_size):
            reply = self._post({"model": self.model, "prompt": texts[lo:lo + self.batch_size],
                                "max_tokens": max_new_tokens, "temperature": temperature,
                                "seed": seed})
            out += [c["text"] for c in sorted(reply["choices"], key=lambda c: c["index"])]
        return out
