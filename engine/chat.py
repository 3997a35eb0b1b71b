"""Conversations: the shapes a chat record comes in, and a chat template's rendering cut into trained and untrained
text. No torch here: training (``train/data.py``), the planner's token count and the app's data scan (both
``data_scan.py``) use it, so they count the same conversations and the same assistant tokens.

A conversation is a list of ``{"role", "content"}`` messages, roles ``system``, ``user``, ``assistant`` (and
``tool``). It is rendered with the model's own chat template, through transformers' renderer (the one
``tokenizer.apply_chat_template`` uses), so a template that folds the system prompt into the first user turn
(Gemma 3) or strips reasoning from earlier turns (QwQ) does here exactly what it does at inference.

Which text is trained is found without ``{% generation %}`` tags, which the published templates lack: every
assistant content is replaced by a marker, the conversation is rendered once, and each assistant turn's trained text
is its content plus the template's end of that turn up to the last special token in it (``<end_of_turn>``,
``<|im_end|>``, ``<|end|>``); the newline a template writes after that token is not trained. A template whose turn
ends without a special token gets the tokenizer's EOS token appended to the turn, and only then.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import DataError

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system", "human": "user", "gpt": "assistant", "model": "assistant"}
Reasoning = Literal["keep", "strip"]
_MARK = "\ue000{}\ue001"  # private-use characters: no template trims, splits or escapes them
_PROBE = "\ue002{}\ue003"


# ---- record shapes ---------------------------------------------------------------------------------------------
def _content(value: Any, where: str) -> str:
    """A message's content: a string, or OpenAI content parts of type text (joined)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text") \
                    and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise DataError(f"{where}[{j}]: a content part of type {kind!r}; only text parts can be trained")
        return "".join(texts)
    raise DataError(f"{where}: expected a string or a list of text parts, found {type(value).__name__}")


def messages_of(value: Any, where: str) -> list[dict[str, str]]:
    """Check and normalise a ``messages`` list; a problem names ``where``, the message's index and the field."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: messages: expected a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(value):
        at = f"{where}: messages[{i}]"
        if not isinstance(m, dict):
            raise DataError(f"{at}: expected an object with `role` and `content`, found {type(m).__name__}")
        role = m.get("role", m.get("from"))
        if not isinstance(role, str):
            raise DataError(f"{at}.role: missing; allowed: {', '.join(ROLES)}")
        role = ROLE_ALIASES.get(role, role)
        if role not in ROLES:
            raise DataError(f"{at}.role: {role!r} is not a role; allowed: {', '.join(ROLES)}")
        calls = m.get("tool_calls") if role == "assistant" else None
        if "content" not in m and "value" not in m and not calls:
            raise DataError(f"{at}.content: missing")
        msg = {"role": role, "content": _content(m.get("content", m.get("value")), f"{at}.content")}
        reasoning = m.get("reasoning_content", m.get("reasoning"))
        if role == "assistant" and isinstance(reasoning, str) and reasoning.strip():
            msg["reasoning_content"] = reasoning
        if role == "assistant" and "weight" in m:  # OpenAI's fine-tuning files: weight 0 keeps a turn untrained
            if m["weight"] not in (0, 1):
                raise DataError(f"{at}.weight: {m['weight']!r}; allowed: 0 (not trained) or 1")
            msg["weight"] = int(m["weight"])
        if calls:
            if not isinstance(calls, list):
                raise DataError(f"{at}.tool_calls: expected a list of calls")
            msg["tool_calls"] = calls
        for key in ("tool_call_id", "name"):
            if role == "tool" and isinstance(m.get(key), str):
                msg[key] = m[key]
        out.append(msg)
    return out


def _choice_message(response: Any, where: str) -> dict | None:
    """The first choice's message of a chat.completion object (or of its ``body``)."""
    if not isinstance(response, dict):
        return None
    body = response.get("body", response)
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        return None
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        raise DataError(f"{where}: choices[0].message: missing in the chat completion")
    return {"role": "assistant", **{k: v for k, v in message.items() if k != "role"}}


def chat_record(row: dict, where: str) -> dict | None:
    """A conversation record from any chat shape, or None when ``row`` is not one.

    Shapes: ``{"messages": [...]}`` (fine-tuning files, Azure OpenAI stored-completion exports; an assistant turn's
    ``weight: 0`` leaves it untrained), ShareGPT's ``{"conversations": [{"from", "value"}]}``; a chat completion
    with its request (``{"messages" | "input_messages": [...], "choices": [...]}`` or ``{"request": {...},
    "response": {...}}``); OpenAI batch lines, a request ``{"custom_id", "body": {"messages"}}`` and an answer
    ``{"custom_id", "response": {"body": {"choices"}}}``, which :func:`pair_batch` joins by ``custom_id``.
    The result keeps the row's other fields (``answer``) and has ``messages``; batch answers have ``_answer_of``."""
    keep = {k: v for k, v in row.items() if k in ("answer", "id")}
    if isinstance(row.get("tools"), list):
        keep["tools"] = row["tools"]
    request = row.get("request") if isinstance(row.get("request"), dict) else None
    body = row.get("body") if isinstance(row.get("body"), dict) else None
    source = row
    if request is not None:
        source = request.get("body", request)
    elif body is not None and "messages" in body:
        source = body
    key = next((k for k in ("messages", "input_messages", "conversations") if isinstance(source.get(k), list)), None)
    if key is None and "custom_id" in row and "response" in row and _failed(row):
        # a batch request that failed (an error object, a non-200 status): its request stays a prompt
        return {"_answer_of": str(row["custom_id"]), "_answer": None, "_where": where}
    answer = _choice_message(row.get("response"), f"{where}: response") if "response" in row and \
        not isinstance(row.get("response"), str) else _choice_message(row, where)
    if key is None:
        if answer is not None and "custom_id" in row:
            return {"_answer_of": str(row["custom_id"]), "_answer": answer, "_where": where}
        return None
    messages = source[key]
    if isinstance(messages, dict) and isinstance(messages.get("data"), list):  # a stored completion's message list
        messages = messages["data"]
    msgs = messages_of(messages, where)
    if answer is not None:
        msgs = msgs + messages_of([answer], f"{where}: response")
    record = {"messages": msgs, **keep}
    if "custom_id" in row and answer is None:
        record["_custom_id"] = str(row["custom_id"])
    return record


def _failed(row: dict) -> bool:
    response = row.get("response")
    if row.get("error") or not isinstance(response, dict):
        return True
    status = response.get("status_code", 200)
    return status != 200 or not isinstance(response.get("body"), dict) or "error" in response["body"]


def pair_batch(rows: list[dict], field: str) -> list[dict]:
    """Join OpenAI batch answers to their requests (by ``custom_id``); a request without an answer stays a prompt,
    an answer without its request is an error naming its line."""
    answers = {r["_answer_of"]: r for r in rows if "_answer_of" in r}
    if not answers:
        return [{k: v for k, v in r.items() if k != "_custom_id"} for r in rows]
    out, used = [], set()
    for r in rows:
        if "_answer_of" in r:
            continue
        cid = r.pop("_custom_id", None)
        if cid is not None and cid in answers:
            if answers[cid]["_answer"] is not None:
                r["messages"] = r["messages"] + messages_of([answers[cid]["_answer"]], answers[cid]["_where"])
            used.add(cid)
        out.append(r)
    for cid, a in answers.items():
        if cid not in used:
            raise DataError(f"{field}: {a['_where']}: a batch answer (custom_id {cid!r}) whose request is not in the "
                            "data; put the batch input file beside the output file")
    return out


def shape_of(record: dict) -> str:
    """"messages", "prompt-response", "text" or "prompt" (a prompt alone)."""
    if "messages" in record:
        return "messages"
    if "response" in record:
        return "prompt-response"
    if "text" in record:
        return "text"
    return "prompt"


# ---- reasoning ---------------------------------------------------------------------------------------------------
def split_reasoning(message: dict) -> tuple[str | None, str]:
    """(reasoning trace or None, answer) of an assistant message: the trace is a ``reasoning_content`` field or the
    text up to ``</think>`` (QwQ's answers may lack the opening tag, which was the generation prompt's)."""
    content = message.get("content") or ""
    trace = message.get("reasoning_content") or None
    if "</think>" in content:
        head, content = content.rsplit("</think>", 1)
        head = head.split("<think>", 1)[1] if "<think>" in head else head
        trace = head.strip() or trace
        content = content.lstrip()
    return (trace.strip() if trace else None), content


# ---- templates ---------------------------------------------------------------------------------------------------
@dataclass
class ChatFormat:
    """A chat template with the tokens it refers to, as the tokenizer that owns it gives them."""

    template: str
    special: dict[str, str] = field(default_factory=dict)  # bos_token, eos_token, ... for the template
    special_texts: tuple[str, ...] = ()  # every special token's text: a turn ends at the last of them
    eos_token: str | None = None
    owner: str = "the tokenizer"  # named in messages ("teacher.model", "student.model")

    def render(self, messages: list[dict], add_generation_prompt: bool = False, tools: list | None = None) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        try:
            return render_jinja_template(conversations=[messages], chat_template=self.template, tools=tools or None,
                                         add_generation_prompt=add_generation_prompt, **self.special)[0][0]
        except Exception as exc:  # noqa: BLE001 - jinja2 raises TemplateError and the template's own exceptions
            raise DataError(f"{self.owner}: its chat template refuses this conversation ({exc})") from None

    def segments(self, messages: list[dict], reasoning: Reasoning = "keep",
                 tools: list | None = None) -> list[tuple[str, bool]]:
        """The rendered conversation as ``(text, trained)`` pieces; trained pieces are the assistant turns: the
        answer (with its ``<think>`` trace where kept, in the template's own form of it), tool calls, and the
        template's end of the turn up to its last special token."""
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if not turns:
            raise DataError(f"{self.owner}: a conversation without an assistant turn has nothing to train on")
        parts = {i: split_reasoning(messages[i]) for i in turns}
        trims = self._trims()
        marked = []
        for i, m in enumerate(messages):
            m = dict(m)
            m.pop("reasoning_content", None)
            m.pop("weight", None)
            if i in parts:
                trace, _ = parts[i]
                # a kept trace goes in as <think> PROBE </think>: the template writes it in its own form (Qwen3
                # moves it into its reasoning block, QwQ drops it from earlier turns), and PROBE shows where
                m["content"] = (f"<think>\n{_PROBE.format(i)}\n</think>\n\n" if reasoning == "keep" and trace
                                else "") + _MARK.format(i)
            marked.append(m)
        kw = {"tools": tools} if tools else {}
        full = self.render(marked, **kw)
        pieces: list[tuple[str, bool]] = []
        pos = 0
        for i in turns:
            trace, answer = parts[i]
            answer = answer.strip() if trims else answer
            mark, probe = _MARK.format(i), _PROBE.format(i)
            if not answer and messages[i].get("tool_calls"):
                # an empty answer before tool calls: templates test the content (Qwen writes "\n" only for one), so
                # the turn is found by rendering it empty and comparing with the marked rendering
                before = full
                marked[i]["content"] = ""
                full = self.render(marked, **kw)
                at = end = _common_prefix(before, full)
                head = ""
            else:
                at = full.find(mark, pos)
                if at < 0 or full.count(mark) != 1:
                    raise DataError(f"{self.owner}: its chat template does not render assistant turn {i} once; "
                                    "cannot tell which tokens are the answer")
                end = at + len(mark)
                head = answer
                p_at = full.find(probe, pos, at)
                if p_at >= 0:  # the trace is kept: trained from the template's <think> on
                    t_at = full.rfind("<think>", pos, p_at)
                    t_at = p_at if t_at < 0 else t_at
                    head = full[t_at:p_at] + trace + full[p_at + len(probe):at] + answer
                    at = t_at
            trained = messages[i].get("weight", 1) != 0
            # the turn's own ending: what the template writes after this turn when it is the last one
            alone = self.render(marked[: i + 1], **kw)
            closing = alone[alone.index(mark) + len(mark):] if mark in alone else alone[end:]
            closing = closing[: _common_prefix(closing, full[end:])]
            last = max((closing.rfind(t) + len(t) for t in self.special_texts if t and t in closing), default=0)
            pieces.append((full[pos:at], False))
            if last:
                pieces.append((head + closing[:last], trained))
            else:  # no special token ends the turn: the EOS token does, as in training without a template
                pieces.append((head + (self.eos_token or ""), trained))
                pieces.append((closing, False))
                last = len(closing)
            pos = end + last
        pieces.append((full[pos:], False))
        return [(t, trained) for t, trained in pieces if t]

    def _trims(self) -> bool:
        if not hasattr(self, "_trim"):
            mark = f" {_MARK.format('t')} "
            try:
                self._trim = mark not in self.render([{"role": "user", "content": "u"},
                                                      {"role": "assistant", "content": mark}])
            except DataError:
                self._trim = False
        return self._trim

    def prompt(self, messages: list[dict], tools: list | None = None) -> str:
        """The conversation up to its last assistant turn, with the template's generation prompt."""
        return self.render(prompt_messages(messages), add_generation_prompt=True, tools=tools)

    def generation_prefix(self, messages: list[dict]) -> str:
        """Text the generation prompt adds inside the assistant's turn (QwQ's ``<think>\\n``): a generated answer
        starts after it, so it belongs in front of the answer when the answer is stored as a turn."""
        prompt_msgs = prompt_messages(messages)
        with_gen = self.render(prompt_msgs, add_generation_prompt=True)
        marked = self.render(prompt_msgs + [{"role": "assistant", "content": _MARK.format("g")}])
        head = marked[: marked.find(_MARK.format("g"))]
        return with_gen[len(head):] if with_gen.startswith(head) and len(with_gen) > len(head) else ""

    def stop_texts(self) -> list[str]:
        """Special tokens that end an assistant turn in this template (for generation's stop ids); worked out once."""
        if not hasattr(self, "_stops"):
            marked = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _MARK.format("s")}]
            try:
                text = self.render(marked)
                closing = text[text.index(_MARK.format("s")) + len(_MARK.format("s")):]
                self._stops = [t for t in self.special_texts if t and t in closing]
            except DataError:
                self._stops = []
        return self._stops


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The messages before the last assistant turn (all of them when none is last)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last != len(messages) - 1:
        return list(messages)
    return list(messages[:last])


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
