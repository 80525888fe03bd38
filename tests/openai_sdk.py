"""Drives a running server with the official openai Python SDK, as an application would.

Usage: openai_sdk.py BASE_URL CREDENTIAL CA_PEM MODEL_ID LIMITED_CREDENTIAL EXPIRED_CREDENTIAL
(LIMITED: 3 requests per minute). Exits non-zero on the first failed check; prints one
line per check and a count at the end.
"""
import json
import sys

import client_checks
import jsonschema
import openai
from client_checks import check

base_url, credential, ca_pem, model, limited, expired = sys.argv[1:7]


def make_client(key=credential):
    return client_checks.openai_client(base_url, key, ca_pem)


client = make_client()


QUESTION = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]

# --- models -------------------------------------------------------------------------
models = client.models.list()
check("models.list", [m.id for m in models.data] == [model], models)
check("models.retrieve", client.models.retrieve(model).id == model)

# --- chat, plain and streaming ------------------------------------------------------
r = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=16, temperature=0,
                                   user="end-user-4711")
text = r.choices[0].message.content
check("chat.completions", bool(text) and r.choices[0].finish_reason in ("stop", "length"), r)
check("chat usage", r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0, r.usage)
check("system_fingerprint", (r.system_fingerprint or "").startswith("fp_"), r.system_fingerprint)

stream = client.chat.completions.create(
    model=model, messages=QUESTION, max_tokens=16, temperature=0, stream=True,
    stream_options={"include_usage": True},
)
pieces, usage, finish = [], None, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
check("chat stream text", "".join(pieces) == text, ("".join(pieces), text))
check("chat stream usage", usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage)
check("chat stream finish", finish == r.choices[0].finish_reason, finish)

# --- determinism: same seed, same request, same output (sampling on) ---------------
def sampled(seed):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=24, temperature=1.0, top_p=0.95, seed=seed,
    ).choices[0].message.content

a, b = sampled(1234), sampled(1234)
check("seed: same seed, same text", a == b, (a, b))
others = {sampled(s) for s in (1, 2, 3)}
check("seed: other seeds differ", len(others | {a}) > 1, others)

# --- n choices ----------------------------------------------------------------------
r = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, n=3, temperature=1.0, seed=7)
check("n=3 choices", [c.index for c in r.choices] == [0, 1, 2], r)
check("n=3 usage sums completions", r.usage.completion_tokens >= 3 and r.usage.completion_tokens ==
      r.usage.total_tokens - r.usage.prompt_tokens, r.usage)
stream = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, n=2, stream=True,
                                        temperature=0)
texts, finished = {0: "", 1: ""}, set()
for chunk in stream:
    for c in chunk.choices:
        texts[c.index] += c.delta.content or ""
        if c.finish_reason:
            finished.add(c.index)
check("n=2 stream: both choices finish", finished == {0, 1}, finished)
check("n=2 greedy stream: identical choices", texts[0] == texts[1] and texts[0], texts)

# --- structured output --------------------------------------------------------------
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Return a JSON object with keys name and color for a cat."}],
    response_format={"type": "json_object"}, max_tokens=200, temperature=0,
)
obj = json.loads(r.choices[0].message.content)
check("json_object parses as an object", isinstance(obj, dict), r.choices[0].message.content)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"enum": ["Paris", "Berlin", "Rome"]},
        "languages": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "city", "languages"],
    "additionalProperties": False,
}
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Describe a person as JSON."}],
    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    max_tokens=200, temperature=0.7, seed=3,
)
person = json.loads(r.choices[0].message.content)
jsonschema.validate(person, PERSON)
check("json_schema output validates", r.choices[0].finish_reason == "stop", person)

try:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "not": {}}}},
    )
    check("unsupported schema keyword → 400", False)
except openai.BadRequestError as e:
    check("unsupported schema keyword → 400", e.param == "response_format.json_schema.schema.not", e)

# --- tools --------------------------------------------------------------------------
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                       "required": ["city"], "additionalProperties": False},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                         "parameters": {"type": "object", "properties": {}}}}
ask = [{"role": "user", "content": "What is the weather in Paris?"}]

# parallel_tool_calls defaults to true: up to 8 calls in one answer (this small model
# repeats its call until that bound).
r = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER, TIME], tool_choice="required",
                                   max_tokens=400, temperature=0)
calls = r.choices[0].message.tool_calls
check("tools required: finish_reason tool_calls", r.choices[0].finish_reason == "tool_calls", r)
check("tools required: at most 8 parallel calls", 1 <= len(calls) <= 8, calls)
check("tools required: calls a declared tool", calls and all(c.function.name in ("get_weather", "get_time")
                                                             for c in calls), calls)
for c in calls:
    args = json.loads(c.function.arguments)
    schema = WEATHER if c.function.name == "get_weather" else TIME
    jsonschema.validate(args, schema["function"]["parameters"])
check("tools required: arguments validate", True)

r = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER, TIME],
                                   tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                   max_tokens=100, temperature=0)
calls = r.choices[0].message.tool_calls
check("tools named: exactly that tool", len(calls) == 1 and calls[0].function.name == "get_weather", calls)
check("tools named: id", calls[0].id.startswith("call_") and calls[0].type == "function", calls)

r = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER], tool_choice="auto",
                                   max_tokens=100, temperature=0)
m = r.choices[0].message
# Calls, possibly cut by max_tokens ("length": the completed ones come back, issue 29), or
# a reply; never the envelope as text.
check("tools auto: calls or a reply", (m.tool_calls and r.choices[0].finish_reason in ("tool_calls", "length")) or
      (m.content is not None and not m.tool_calls and '"tool_calls"' not in m.content), m)

r = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER], tool_choice="none",
                                   max_tokens=16, temperature=0)
check("tools none: plain reply", r.choices[0].message.tool_calls is None and r.choices[0].message.content, r)

# Round trip: the call and its result go back into the history.
r = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER], tool_choice="required",
                                   parallel_tool_calls=False, max_tokens=100, temperature=0)
check("parallel_tool_calls=false: one call", len(r.choices[0].message.tool_calls) == 1, r)
call_msg = r.choices[0].message
history = ask + [call_msg, {"role": "tool", "tool_call_id": call_msg.tool_calls[0].id,
                            "content": "22 degrees and sunny"}]
r2 = client.chat.completions.create(model=model, messages=history, tools=[WEATHER], max_tokens=60, temperature=0)
# The server took the SDK's own message back (a refusal would have raised), and what it
# says is consistent: finish_reason "tool_calls" exactly when the answer carries calls,
# otherwise a text answer ("stop", or "length" at max_tokens with usage to match).
m2, f2 = r2.choices[0].message, r2.choices[0].finish_reason
check("tools round trip: answer and finish_reason agree",
      (f2 == "tool_calls" and bool(m2.tool_calls) and m2.content is None) or
      (f2 == "stop" and not m2.tool_calls and bool(m2.content)) or
      (f2 == "length" and not m2.tool_calls and r2.usage.completion_tokens == 60), r2)

stream = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER], tool_choice="required",
                                        parallel_tool_calls=False, max_tokens=100, temperature=0, stream=True)
names, args, finish = [], "", None
for chunk in stream:
    for c in chunk.choices:
        for tc in c.delta.tool_calls or []:
            if tc.function.name:
                names.append(tc.function.name)
            args += tc.function.arguments or ""
        if c.finish_reason:
            finish = c.finish_reason
check("tools stream: delta.tool_calls", names == ["get_weather"] and finish == "tool_calls", (names, finish))
jsonschema.validate(json.loads(args), WEATHER["function"]["parameters"])
check("tools stream: arguments validate", True)

# --- logprobs and logit_bias --------------------------------------------------------
r = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=6, temperature=0,
                                   logprobs=True, top_logprobs=3)
lp = r.choices[0].logprobs.content
check("logprobs: one entry per token", len(lp) == r.usage.completion_tokens, (len(lp), r.usage))
check("logprobs: greedy picks the top alternative",
      all(e.top_logprobs[0].token == e.token and e.logprob <= 0 and len(e.top_logprobs) == 3 for e in lp), lp)
check("logprobs: tokens spell the text", "".join(e.token for e in lp) == r.choices[0].message.content, lp)

# logit_bias: +100 on one token id forces it at every step; an id outside the vocabulary is a 400.
r = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=3, temperature=0, logprobs=0,
                              logit_bias={"1000": 100})
toks = r.choices[0].logprobs.tokens
check("logit_bias +100 forces the token", len(toks) == 3 and len(set(toks)) == 1, toks)
r = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=3, temperature=0, logprobs=0,
                              logit_bias={"1000": -100})
check("logit_bias -100 bans the token", toks[0] not in r.choices[0].logprobs.tokens, r.choices[0].logprobs.tokens)
try:
    client.completions.create(model=model, prompt="x", max_tokens=1, logit_bias={"999999999": 1})
    check("logit_bias unknown token id → 400", False)
except openai.BadRequestError as e:
    check("logit_bias unknown token id → 400", e.param == "logit_bias", e)
r = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=6, temperature=0,
                                   logprobs=True)
check("logprobs without top_logprobs", r.choices[0].logprobs.content[0].top_logprobs == [], r.choices[0].logprobs)

# --- completions --------------------------------------------------------------------
c = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=5, temperature=0)
check("completions", c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 5, c)
c = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=5, temperature=0, logprobs=2)
check("completions logprobs", len(c.choices[0].logprobs.tokens) == 5 and
      "".join(c.choices[0].logprobs.tokens) == c.choices[0].text, c.choices[0].logprobs)

# --- embeddings ---------------------------------------------------------------------
e = client.embeddings.create(model=model, input=["The cat sat on the mat.", "A cat was sitting on a rug.",
                                                  "Quarterly tax filing deadlines"])
vecs = [d.embedding for d in e.data]
check("embeddings: one vector per input", len(vecs) == 3 and len(vecs[0]) > 100, len(vecs))
norm = sum(x * x for x in vecs[0]) ** 0.5
check("embeddings: unit length", abs(norm - 1) < 1e-3, norm)
dot = lambda u, v: sum(x * y for x, y in zip(u, v))
check("embeddings: similar texts are closer", dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2]),
      (dot(vecs[0], vecs[1]), dot(vecs[0], vecs[2])))
check("embeddings: usage", e.usage.prompt_tokens > 10 and e.usage.total_tokens == e.usage.prompt_tokens, e.usage)
f = client.embeddings.create(model=model, input="The cat sat on the mat.", encoding_format="float")
check("embeddings: float and base64 agree", max(abs(x - y) for x, y in zip(f.data[0].embedding, vecs[0])) < 1e-6)

# --- errors, as the SDK's exception classes -----------------------------------------
try:
    make_client("nobody:wrong").models.list()
    check("AuthenticationError", False)
except openai.AuthenticationError as e:
    check("AuthenticationError", e.status_code == 401 and e.code == "invalid_api_key", e)

try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    check("NotFoundError", False)
except openai.NotFoundError as e:
    check("NotFoundError", e.code == "model_not_found", e)

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], temperature=5)
    check("BadRequestError", False)
except openai.BadRequestError as e:
    check("BadRequestError", e.param == "temperature", e)

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                   extra_body={"mirostat": 2})
    check("unknown field → BadRequestError naming it", False)
except openai.BadRequestError as e:
    check("unknown field → BadRequestError naming it", e.param == "mirostat", e)

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi " * 6000}], max_tokens=5)
    check("context too long → BadRequestError", False)
except openai.BadRequestError as e:
    check("context too long → BadRequestError", e.code == "context_length_exceeded", e)

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x" * 2_000_000}])
    check("413 → APIStatusError", False)
except openai.APIStatusError as e:
    check("413 → APIStatusError", e.status_code == 413, e)

try:
    make_client(expired).models.list()
    check("expired key → AuthenticationError", False)
except openai.AuthenticationError as e:
    check("expired key → AuthenticationError", e.code == "expired_api_key", e)

try:
    for _ in range(4):
        make_client(limited).models.list()
    check("RateLimitError", False)
except openai.RateLimitError as e:
    check("RateLimitError", e.status_code == 429 and int(e.response.headers["retry-after"]) >= 1
          and e.code == "rate_limit_exceeded", e)

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], n=5)
    check("n above the cap → BadRequestError", False)
except openai.BadRequestError as e:
    check("n above the cap → BadRequestError", e.param == "n", e)

print(f"all SDK checks passed: {client_checks.passed}")
