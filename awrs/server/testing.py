"""Helpers for testing the server: a live uvicorn server in a thread, and a tiny chat model.

    with LiveServer(create_app(toy_chat_model())) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
"""

from __future__ import annotations

import socket
import string
import threading
import time
from collections.abc import Sequence

import numpy as np
from typing_extensions import Self

from ..models.table import TableModel

#: The toy model's tokens: printable ASCII one character each, a few longer ones, and EOS.
TOY_TOKENS = tuple(string.printable[:95] + "\n") + ("ab", "12", '{"', '":', '",', "<eos>")


class ToyChatModel(TableModel):
    """A :class:`~awrs.TableModel` with a fixed next-token distribution and a chat template.

    The distribution favours digits, lower-case letters, JSON punctuation and EOS, so that
    regexes and small JSON schemas complete within a few dozen tokens. ``delay`` (seconds per
    row per step) makes runs slow on purpose, for tests of time limits and cancellation.
    """

    def __init__(self, delay: float = 0.0, name: str = "toy") -> None:
        weights = np.ones(len(TOY_TOKENS))
        for i, token in enumerate(TOY_TOKENS):
            if token.isdigit():
                weights[i] = 3.0
            elif token.isalpha() and token.islower():
                weights[i] = 2.0
            elif token in (":", "{", ",", '{"', '":', '",'):
                weights[i] = 3.0
            elif token in ('"', "}"):  # strings and objects close soon
                weights[i] = 10.0 if token == '"' else 8.0
        eos = TOY_TOKENS.index("<eos>")
        weights[eos] = 10.0
        self._fixed = np.log(weights / weights.sum())
        self.delay = delay
        super().__init__(list(TOY_TOKENS), lambda context: weights, eos=eos, name=name)

    def logprobs_of(self, context: Sequence[int]) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        return self._fixed

    def apply_chat_template(self, messages) -> list[int]:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.encode(text)


def toy_chat_model(delay: float = 0.0) -> ToyChatModel:
    return ToyChatModel(delay)


class LiveServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; stop on exit.

    Args:
        app: the ASGI app.
        start_timeout: seconds to wait for the server to accept connections.
    """

    def __init__(self, app, *, start_timeout: float = 30.0, log_level: str = "warning") -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="awrs-test-server", daemon=True)
        self._start_timeout = start_timeout

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __exit__(self, *exc) -> None:
        self.stop()
