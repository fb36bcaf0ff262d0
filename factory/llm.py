"""The one module that talks to Claude (imports ``anthropic``): a call, its tokens and cost recorded, a hard
budget, and a resumed run that never pays for a call twice.

- **Where**: ``ANTHROPIC_API_KEY`` (the key, from the environment only; it reaches the client and nothing
  else: not a prompt, not a log line, not the audit), ``ANTHROPIC_BASE_URL`` (the API, or the fake on
  loopback the tests use). Model, token limit, budget and prices come from the research settings.
- **Retries**: the client's own (429 honouring ``retry-after``, 529 overloaded, 5xx, connection errors;
  ``max_retries`` from the settings); a call that still fails is an ``LlmError`` naming the status.
- **Budget**: before a call, the worst case (the prompt's size as tokens, plus ``max_tokens`` out, at the
  model's prices) must fit in what is left of ``budget_usd`` and ``budget_tokens``; otherwise
  ``BudgetExceeded`` and nothing is sent. After it, the endpoint's reported usage is what is counted.
- **Once**: each call has a key (run, iteration, turn). The ledger keeps the whole response under it; asked
  again after a kill, the stored response is returned and nothing is sent or paid.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Protocol

import anthropic

# USD per million tokens (input, output): Anthropic's list prices by model family. A model not here needs
# its prices in the research settings.
PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
}


class LlmError(RuntimeError):
    """A call that failed after the client's retries (or was refused before it was sent)."""


class BudgetExceeded(LlmError):
    """The next call could cost more than what is left of the budget: it is not sent."""


def prices_for(model: str, override: tuple[float, float] | None = None) -> tuple[float, float]:
    if override is not None:
        return override
    for prefix in sorted(PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            return PRICES[prefix]
    raise LlmError(f"model {model!r}: no known price; give price_per_mtok: {{input: USD, output: USD}} in the "
                   f"research settings")


def cost(usage: dict[str, int], prices: tuple[float, float]) -> float:
    return (usage["input_tokens"] * prices[0] + usage["output_tokens"] * prices[1]) / 1e6


@dataclass(frozen=True)
class Call:
    """One exchange as the ledger keeps it."""

    key: str
    model: str
    request: dict  # system, messages, tools: exactly what was sent (no key: it travels in a header)
    response: dict  # the Messages API's JSON
    input_tokens: int
    output_tokens: int
    usd: float

    @property
    def content(self) -> list[dict]:
        return self.response["content"]


class Ledger(Protocol):
    def call(self, key: str) -> Call | None: ...

    def record(self, call: Call) -> None: ...

    def spent(self) -> tuple[int, float]:
        """(tokens, USD) of every call recorded (the run's)."""
        ...


def prompt_hash(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


class Client:
    def __init__(self, model: str, max_tokens: int, budget_usd: float, budget_tokens: int, ledger: Ledger,
                 *, max_retries: int = 4, timeout: float = 120.0, prices: tuple[float, float] | None = None) -> None:
        self.model, self.max_tokens = model, max_tokens
        self.budget_usd, self.budget_tokens = budget_usd, budget_tokens
        self.prices = prices_for(model, prices)
        self.ledger = ledger
        key = os.environ.get("ANTHROPIC_API_KEY", "")
        if not key:
            raise LlmError("ANTHROPIC_API_KEY is not set: the research loop needs a key (or the fake endpoint's, "
                           "with ANTHROPIC_BASE_URL; see README, Research)")
        self._client = anthropic.Anthropic(api_key=key, max_retries=max_retries, timeout=timeout)

    def worst_case(self, request: dict) -> tuple[int, float]:
        """Tokens and USD the call could cost at most (its size at a byte a token, all of max_tokens out)."""
        inp = len(json.dumps(request))
        return inp + self.max_tokens, cost({"input_tokens": inp, "output_tokens": self.max_tokens}, self.prices)

    def call(self, key: str, system: str, messages: list[dict], tools: list[dict]) -> Call:
        """The call under ``key``: stored already (a resumed run), or sent now within the budget."""
        done = self.ledger.call(key)
        if done is not None:
            return done
        request = {"system": system, "messages": messages, "tools": tools}
        tok, usd = self.worst_case(request)
        spent_tok, spent_usd = self.ledger.spent()
        if spent_usd + usd > self.budget_usd or spent_tok + tok > self.budget_tokens:
            raise BudgetExceeded(f"the next call could cost ${usd:.4f} / {tok:,} tokens; spent ${spent_usd:.4f} / "
                                 f"{spent_tok:,} of ${self.budget_usd:g} / {self.budget_tokens:,}")
        try:
            msg = self._client.messages.create(model=self.model, max_tokens=self.max_tokens, system=system,
                                               messages=messages, tools=tools)
        except anthropic.APIStatusError as exc:
            raise LlmError(f"the Messages API answered {exc.status_code}: {_message(exc)}") from None
        except anthropic.APIConnectionError as exc:
            raise LlmError(f"the Messages API could not be reached: {exc}") from None
        response = msg.model_dump(mode="json")
        usage = {"input_tokens": msg.usage.input_tokens, "output_tokens": msg.usage.output_tokens}
        call = Call(key, self.model, request, response, usage["input_tokens"], usage["output_tokens"],
                    cost(usage, self.prices))
        self.ledger.record(call)
        return call


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str(err.get("message") or exc.message)[:300]


def usd_per(n: int, usd: float) -> float:
    return usd / n if n else math.inf
