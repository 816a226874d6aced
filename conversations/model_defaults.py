"""What chatsite assumes about a model the admin has not described: one table, one lookup.

The model catalog (``catalog.py``) starts every model a key lists from these defaults; an admin
overrides any of them per key and model (``CatalogModel``). Nothing else in the code tests a
model's name: which length parameter, which role for the instructions, whether ``temperature``
is sent, how long a reply may think, what a token costs -- all of it is read from here or from
the admin's overrides, through ``catalog.spec_for``.

Where the figures come from: OpenAI's published model pages (platform.openai.com/docs/models,
context window, maximum output, modalities, reasoning, supported parameters) and its price list
(openai.com/api/pricing, standard tier, US dollars per million tokens), as they stood when this
table was last revised (2026). Providers change prices: they are the admin's to keep current in
the catalog, and a model this table does not price has no price (its replies' cost is unknown,
never zero). The prices are in US dollars, so a site counting in another currency starts with
none.

A family's capabilities apply to every id that starts with its prefix (``gpt-4o`` covers
``gpt-4o-2024-11-20``; the longest prefix wins, so ``gpt-4o-mini`` has its own row), and to a
fine-tuned model (``ft:gpt-4o-mini-2024-07-18:org::id``) of that family. Its prices apply only to
the ids listed with them (the alias and the snapshots sold at that price): a newer or older
snapshot, a variant or a fine-tuned model may cost something else. An id no row matches is
treated conservatively: ``max_tokens``, instructions as ``system``, ``temperature`` accepted, a
modest context window, no price, no provider-specific parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from decimal import Decimal

# The currency of the prices below: they apply on a site that counts in it (CHATSITE_CURRENCY).
CURRENCY = "USD"

MAX_TOKENS = "max_tokens"
MAX_COMPLETION_TOKENS = "max_completion_tokens"
SYSTEM = "system"
DEVELOPER = "developer"

# Seconds a reasoning model may think before its first text (CHATSITE_FIRST_TOKEN_TIMEOUT, if
# longer, still applies): long problems take minutes.
REASONING_FIRST_TOKEN_TIMEOUT = 600.0


@dataclass(frozen=True)
class Defaults:
    """What is assumed of a model until an admin says otherwise."""

    context_window: int
    max_output_tokens: int | None
    vision: bool = False
    image_detail: str = "auto"  # sent with attached images unless the member chooses
    reasoning: bool = False
    accepts_temperature: bool = True
    length_parameter: str = MAX_TOKENS
    system_role: str = SYSTEM
    input_price: Decimal | None = None
    cached_input_price: Decimal | None = None
    output_price: Decimal | None = None
    # None: CHATSITE_FIRST_TOKEN_TIMEOUT.
    first_token_timeout: float | None = None
    accepts_safety_identifier: bool = False
    accepts_prompt_cache_key: bool = False


@dataclass(frozen=True)
class Family:
    prefix: str
    defaults: Defaults
    # The ids sold at ``defaults``' prices: the alias (``prefix``) and these snapshots.
    priced_snapshots: tuple[str, ...] = ()


UNKNOWN = Defaults(context_window=8_192, max_output_tokens=None)


def _price(input_: str, cached: str | None, output: str) -> dict:
    return {"input_price": Decimal(input_), "output_price": Decimal(output),
            "cached_input_price": Decimal(cached) if cached is not None else None}


def _chat(window: int, output: int, *, vision: bool = True, **fields) -> Defaults:
    """An OpenAI chat model of the GPT-4 generation."""
    return Defaults(context_window=window, max_output_tokens=output, vision=vision,
                    accepts_safety_identifier=True, accepts_prompt_cache_key=True, **fields)


def _reasoning(window: int, output: int, *, vision: bool = True, **fields) -> Defaults:
    """An OpenAI reasoning model: o-series and GPT-5."""
    return Defaults(context_window=window, max_output_tokens=output, vision=vision,
                    reasoning=True, accepts_temperature=False,
                    length_parameter=MAX_COMPLETION_TOKENS, system_role=DEVELOPER,
                    first_token_timeout=REASONING_FIRST_TOKEN_TIMEOUT,
                    accepts_safety_identifier=True, accepts_prompt_cache_key=True, **fields)


FAMILIES: tuple[Family, ...] = (
    # GPT-3.5 and GPT-4 (legacy).
    Family("gpt-3.5-turbo", _chat(16_385, 4_096, vision=False,
                                  **_price("0.50", None, "1.50")), ("gpt-3.5-turbo-0125",)),
    Family("gpt-4", _chat(8_192, 8_192, vision=False, **_price("30.00", None, "60.00")),
           ("gpt-4-0613",)),
    Family("gpt-4-turbo", _chat(128_000, 4_096, **_price("10.00", None, "30.00")),
           ("gpt-4-turbo-2024-04-09",)),
    # GPT-4o.
    Family("gpt-4o", _chat(128_000, 16_384, **_price("2.50", "1.25", "10.00")),
           ("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")),
    Family("gpt-4o-mini", _chat(128_000, 16_384, **_price("0.15", "0.075", "0.60")),
           ("gpt-4o-mini-2024-07-18",)),
    Family("chatgpt-4o-latest", _chat(128_000, 16_384, **_price("5.00", None, "15.00"))),
    # GPT-4.1: a million tokens of context.
    Family("gpt-4.1", _chat(1_047_576, 32_768, **_price("2.00", "0.50", "8.00")),
           ("gpt-4.1-2025-04-14",)),
    Family("gpt-4.1-mini", _chat(1_047_576, 32_768, **_price("0.40", "0.10", "1.60")),
           ("gpt-4.1-mini-2025-04-14",)),
    Family("gpt-4.1-nano", _chat(1_047_576, 32_768, **_price("0.10", "0.025", "0.40")),
           ("gpt-4.1-nano-2025-04-14",)),
    # The o-series: reasoning, no temperature, instructions as "developer".
    Family("o1", _reasoning(200_000, 100_000, **_price("15.00", "7.50", "60.00")),
           ("o1-2024-12-17",)),
    Family("o1-mini", _reasoning(128_000, 65_536, vision=False,
                                 **_price("1.10", "0.55", "4.40")), ("o1-mini-2024-09-12",)),
    Family("o3", _reasoning(200_000, 100_000, **_price("2.00", "0.50", "8.00")),
           ("o3-2025-04-16",)),
    Family("o3-mini", _reasoning(200_000, 100_000, vision=False,
                                 **_price("1.10", "0.55", "4.40")), ("o3-mini-2025-01-31",)),
    Family("o4-mini", _reasoning(200_000, 100_000, **_price("1.10", "0.275", "4.40")),
           ("o4-mini-2025-04-16",)),
    # GPT-5: reasoning too (400,000 tokens of context, of which 128,000 may be output).
    Family("gpt-5", _reasoning(400_000, 128_000, **_price("1.25", "0.125", "10.00")),
           ("gpt-5-2025-08-07",)),
    Family("gpt-5-mini", _reasoning(400_000, 128_000, **_price("0.25", "0.025", "2.00")),
           ("gpt-5-mini-2025-08-07",)),
    Family("gpt-5-nano", _reasoning(400_000, 128_000, **_price("0.05", "0.005", "0.40")),
           ("gpt-5-nano-2025-08-07",)),
    Family("gpt-5.1", _reasoning(400_000, 128_000, **_price("1.25", "0.125", "10.00")),
           ("gpt-5.1-2025-11-13",)),
    # The chat model behind ChatGPT: no reasoning effort to choose, and no temperature.
    Family("gpt-5-chat-latest", replace(
        _reasoning(128_000, 16_384, **_price("1.25", "0.125", "10.00")),
        reasoning=False, first_token_timeout=None)),
)

FINE_TUNED = "ft:"


def _matches(model: str, prefix: str) -> bool:
    """Whether ``model`` is ``prefix`` or one of its variants (``prefix-…``, ``prefix.…``),
    not merely an id that starts with the same letters (``o1`` is no prefix of ``o10``)."""
    return model == prefix or (model.startswith(prefix)
                               and not model[len(prefix)].isalnum())


@functools.lru_cache(maxsize=4096)
def defaults_for(model: str) -> Defaults:
    """Return the defaults of ``model``: its family's, priced only for the ids sold at that
    price; ``UNKNOWN`` for a model of no family. Kept per model id: a page lists every model of
    every key (a provider lists a hundred), and the table does not change while the site runs."""
    model_id = model.strip().lower()
    fine_tuned = model_id.startswith(FINE_TUNED)
    base = model_id[len(FINE_TUNED):].split(":", 1)[0] if fine_tuned else model_id
    family = max((family for family in FAMILIES if _matches(base, family.prefix)),
                 key=lambda family: len(family.prefix), default=None)
    if family is None:
        return UNKNOWN
    if not fine_tuned and (base == family.prefix or base in family.priced_snapshots):
        return family.defaults
    return replace(family.defaults, input_price=None, cached_input_price=None,
                   output_price=None)
