"""What one reply sends upstream: the conversation and its settings, shaped for the model.

Computed once per reply, from the model's catalog entry (``catalog.ModelSpec``), so that the
request, the prompt's estimate and the page's notice agree:

- the instructions under the role the model takes (``system``, or ``developer`` for reasoning
  models), the length limit under the parameter it takes (``max_tokens`` or
  ``max_completion_tokens``, never above its output limit), ``temperature`` only where it is
  accepted, ``reasoning_effort`` only for a reasoning model;
- a member's message with attachments as OpenAI's content parts (``attachments.content_for``:
  text, each file's text with its name, each image with its detail), estimated at a fixed count
  per image;
- a conversation longer than the model's context window (less the room kept for the reply)
  without its earliest turns -- never the instructions, never the newest message -- and how many
  messages were left out, which the page tells the member;
- where the provider accepts them, a ``safety_identifier`` per member (a keyed hash of their id:
  the operator can trace an abuse report to a member, the provider learns no name) and a
  ``prompt_cache_key`` per conversation (its turns hit the provider's prompt cache).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.crypto import salted_hmac

from . import attachments, selectors
from .catalog import ModelSpec
from .models import Conversation, Message
from .usage import estimate_prompt_tokens

USER = Message.Role.USER.value


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    parameters: dict
    omitted: int  # earlier messages left out so that the conversation fits the window
    prompt_estimate: int  # tokens, estimated, of ``messages``


def request_for(message: Message, spec: ModelSpec) -> Request:
    """Return the request that generates the reply ``message`` with the model ``spec``."""
    conversation = message.conversation
    instructions = ([{"role": spec.system_role, "content": conversation.system_prompt}]
                    if conversation.system_prompt else [])
    history = selectors.history_for(message)
    attached = attachments.by_message(pk for pk, role, _content in history if role == USER)
    turns = [{"role": role, "content": attachments.content_for(content, attached.get(pk, []), spec)}
             for pk, role, content in history]
    length = output_limit(conversation, spec)
    reserve = length or spec.max_output_tokens or spec.context_window // 4
    turns, omitted = fit(instructions, turns, spec.context_window - reserve)
    messages = instructions + turns
    return Request(messages=messages, parameters=parameters(conversation, spec, length),
                   omitted=omitted, prompt_estimate=estimate_prompt_tokens(messages))


def output_limit(conversation: Conversation, spec: ModelSpec) -> int | None:
    """Return the reply's length limit: the member's, at most the model's output limit."""
    wanted = conversation.max_output_tokens
    if wanted and spec.max_output_tokens:
        return min(wanted, spec.max_output_tokens)
    return wanted or None


def fit(instructions: list[dict], turns: list[dict], budget: int) -> tuple[list[dict], int]:
    """Return ``turns`` without their earliest ones while the estimate of the whole exceeds
    ``budget`` tokens, and how many were left out. A turn is left out whole (a message and
    the replies to it), so what is sent starts with a member's message; the newest message is
    always sent, however long (the provider then says it is too long)."""
    size = estimate_prompt_tokens(instructions + turns)
    start = 0
    while size > budget and start < len(turns) - 1:
        size -= estimate_prompt_tokens([turns[start]])
        start += 1
        while start < len(turns) - 1 and turns[start]["role"] != USER:
            size -= estimate_prompt_tokens([turns[start]])
            start += 1
    return turns[start:], start


def parameters(conversation: Conversation, spec: ModelSpec, length: int | None) -> dict:
    """Return the request's parameters beside model and messages, as the model takes them."""
    sent: dict = {}
    if conversation.temperature is not None and spec.accepts_temperature:
        sent["temperature"] = float(conversation.temperature)
    if length:
        sent[spec.length_parameter] = length
    if conversation.reasoning_effort and spec.reasoning:
        sent["reasoning_effort"] = conversation.reasoning_effort
    if spec.accepts_safety_identifier:
        sent["safety_identifier"] = safety_identifier(conversation.owner_id)
    if spec.accepts_prompt_cache_key:
        sent["prompt_cache_key"] = prompt_cache_key(conversation.pk)
    return sent


def safety_identifier(user_id: int) -> str:
    """Return the member's stable, opaque identifier for the provider: an HMAC of their id
    under a key derived from SECRET_KEY (64 hex digits, the most the provider takes)."""
    return salted_hmac("chatsite.payload.safety_identifier", str(user_id),
                       algorithm="sha256").hexdigest()


def prompt_cache_key(conversation_id: int) -> str:
    """Return the conversation's key for the provider's prompt cache."""
    digest = salted_hmac("chatsite.payload.prompt_cache_key", str(conversation_id),
                         algorithm="sha256").hexdigest()
    return f"chatsite-{digest[:32]}"
