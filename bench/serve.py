"""`bench serve`: an OpenAI-compatible /v1/completions server on loopback, backed by this
project's `llamacpp` or `hf` backend, so the `openai` client (and other tools) can be used against
a real socket without any external service. (vLLM has a server of its own: `vllm serve`.)"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# the in-process engines that give the top log-probabilities the completions API returns
SERVE_BACKENDS = ("llamacpp", "hf")


def serve_backend(name: str, model: str) -> str:
    """`auto` -> the engine `backend: auto` picks for `model` on this machine
    (ctrlrec.hardware.resolve_backend: on a CPU llamacpp for a model it runs, hf with AMX),
    hf where that pick has no server here (vllm: use `vllm serve`)."""
    if name != "auto":
        return name
    from ctrlrec.hardware import default_device, resolve_backend

    picked = resolve_backend("auto", model, default_device())
    return picked if picked in SERVE_BACKENDS else "hf"


def make_server(backend, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    lock = threading.Lock()  # one forward pass at a time: the model is not re-entrant

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: requests may contain user text
            pass

        def _send(self, code: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [
                    {"id": backend.identity["model"], "object": "model"}]})
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                prompts = req["prompt"] if isinstance(req["prompt"], list) else [req["prompt"]]
                if not prompts or not all(isinstance(p, str) and p for p in prompts):
                    raise ValueError("prompt must be a non-empty string or list of them")
                with lock:
                    choices = _complete(backend, prompts, req)
            except (KeyError, ValueError, TypeError) as exc:
                return self._send(400, {"error": {"message": f"bad request: {exc}"}})
            except Exception as exc:  # noqa: BLE001 - the engine failed: say so, keep serving
                first = (str(exc).strip().splitlines() or [""])[0]
                return self._send(500, {"error": {"message": f"{type(exc).__name__}: {first}"}})
            self._send(200, {"object": "text_completion", "model": req.get("model"),
                             "choices": choices})

    return ThreadingHTTPServer((host, port), Handler)


def _complete(backend, prompts: list[str], req: dict) -> list[dict]:
    n_top = int(req.get("logprobs") or 0)
    max_tokens = int(req.get("max_tokens", 16))
    tok = backend.tokenizer
    if max_tokens == 1 and n_top:
        choices = []
        for i, top in enumerate(backend.top_logprobs(prompts, min(n_top, 20))):
            strings = {tok.decode([t]): lp for t, lp in top}
            first = tok.decode([top[0][0]])
            choices.append({"index": i, "text": first, "finish_reason": "length",
                            "logprobs": {"tokens": [first], "token_logprobs": [top[0][1]],
                                         "top_logprobs": [strings]}})
        return choices
    texts = backend.generate(prompts, max_new_tokens=max_tokens,
                             temperature=float(req.get("temperature", 0.0)),
                             seed=int(req.get("seed", 0)))
    return [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None}
            for i, t in enumerate(texts)]
