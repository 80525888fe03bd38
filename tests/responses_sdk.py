"""Drives a running server's Responses API (`/v1/responses`) with the official openai
Python SDK, as an application would: create, parse (pydantic), a function-tool round trip,
stream with the SDK's event helpers, input_tokens, and the error classes.

Usage: responses_sdk.py BASE_URL CREDENTIAL CA_PEM MODEL_ID LIMITED_CREDENTIAL EXPIRED_CREDENTIAL
Exits non-zero on the first failed check; prints one line per check and a count at the end.
"""
import json
import sys
import time

import client_checks
import jsonschema
import openai
import pydantic
from client_checks import check

base_url, credential, ca_pem, model, limited, expired = sys.argv[1:7]


def make_client(key=credential):
    return client_checks.openai_client(base_url, key, ca_pem)


client = make_client()
QUESTION = "What is the capital of France? Answer in one word."

# --- text -------------------------------------------------------------------------------
r = client.responses.create(model=model, input=QUESTION, instructions="Answer briefly.",
                            max_output_tokens=16, temperature=0, user="end-user-4711")
check("responses.create: object", r.object == "response" and r.id.startswith("resp_"), r)
check("responses.create: status", r.status in ("completed", "incomplete"), r)
check("responses.create: status matches incomplete_details",
      (r.status == "incomplete") == (r.incomplete_details is not None and
                                     r.incomplete_details.reason == "max_output_tokens"), r)
check("responses.create: one message item", [o.type for o in r.output] == ["message"], r.output)
check("responses.create: output_text", bool(r.output_text) and r.output_text == r.output[0].content[0].text, r)
u = r.usage
check("responses.create: usage", u.total_tokens == u.input_tokens + u.output_tokens and u.input_tokens > 0
      and 0 < u.output_tokens <= 16 and u.output_tokens_details.reasoning_tokens == 0
      and u.input_tokens_details.cached_tokens >= 0, u)
check("responses.create: settings echoed", r.instructions == "Answer briefly." and r.temperature == 0
      and r.max_output_tokens == 16 and r.model == model and r.tools == [], r)

# Items instead of a string; the same answer for the same greedy prompt.
r2 = client.responses.create(model=model, instructions="Answer briefly.", max_output_tokens=16, temperature=0,
                             input=[{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}])
check("responses.create: items input", r2.output_text == r.output_text, (r2.output_text, r.output_text))

# --- structured output ------------------------------------------------------------------
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                         "population": {"type": "integer", "minimum": 0}},
        "required": ["city", "population"], "additionalProperties": False}
r = client.responses.create(model=model, input=QUESTION, max_output_tokens=60, temperature=0,
                            text={"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}})
check("text.format json_schema: completed", r.status == "completed", r)
jsonschema.validate(json.loads(r.output_text), CITY)
check("text.format json_schema: output validates", True)
check("text.format echoed", r.text.format.type == "json_schema" and r.text.format.name == "city", r.text)


class City(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=20)
    population: int


r = client.responses.parse(model=model, input=QUESTION, text_format=City, max_output_tokens=60, temperature=0)
check("responses.parse: pydantic", isinstance(r.output_parsed, City), r)

r = client.responses.create(model=model, input=QUESTION + " Reply in JSON.", max_output_tokens=40, temperature=0,
                            text={"format": {"type": "json_object"}})
check("text.format json_object", r.status != "completed" or isinstance(json.loads(r.output_text), dict), r)

# --- tools: a round trip ----------------------------------------------------------------
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
# parallel_tool_calls defaults to true: up to 8 calls in one answer (this small model
# repeats its call until that bound).
r = client.responses.create(model=model, input=ask, tools=[WEATHER], tool_choice="required",
                            max_output_tokens=400, temperature=0)
calls = [o for o in r.output if o.type == "function_call"]
check("tools required: function_call items", r.status == "completed" and 1 <= len(calls) <= 8
      and len(calls) == len(r.output), r.output)
call = calls[0]
check("tools required: call ids", call.call_id.startswith("call_") and call.id.startswith("fc_")
      and call.name == "get_weather" and call.status == "completed", call)
jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
check("tools required: arguments validate", True)
check("tools echoed", r.tools[0].name == "get_weather" and r.tool_choice == "required", (r.tools, r.tool_choice))
# The application runs the tool and sends the whole conversation back (nothing is stored).
history = ask + [o.model_dump(exclude_none=True) for o in r.output] + [
    {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 21})}]
r2 = client.responses.create(model=model, input=history, tools=[WEATHER], tool_choice="none",
                             max_output_tokens=40, temperature=0)
check("tools round trip: an answer", r2.output[0].type == "message" and bool(r2.output_text), r2)
check("tools round trip: the result was in the prompt", r2.usage.input_tokens > r.usage.input_tokens, (r2.usage, r.usage))

r = client.responses.create(model=model, input=ask, tools=[WEATHER],
                            tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60,
                            temperature=0, parallel_tool_calls=False)
check("tools named, not parallel: one call", [o.type for o in r.output] == ["function_call"]
      and r.output[0].name == "get_weather" and r.parallel_tool_calls is False, r.output)

# --- streaming ---------------------------------------------------------------------------
types, seqs, deltas = [], [], []
with client.responses.stream(model=model, input=QUESTION, instructions="Answer briefly.",
                             max_output_tokens=16, temperature=0) as stream:
    for event in stream:
        types.append(event.type)
        seqs.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    final = stream.get_final_response()
check("stream: lifecycle first", types[:2] == ["response.created", "response.in_progress"], types)
check("stream: terminal event last", types[-1] in ("response.completed", "response.incomplete"), types)
check("stream: sequence numbers count from 0", seqs == list(range(len(seqs))), seqs)
check("stream: item and part events", types.index("response.output_item.added") < types.index(
    "response.content_part.added") < types.index("response.output_text.delta") < types.index(
    "response.output_text.done") < types.index("response.content_part.done") < types.index(
    "response.output_item.done"), types)
check("stream: deltas add up", "".join(deltas) == final.output_text, (deltas, final.output_text))
check("stream: get_final_response", final.id.startswith("resp_") and final.status == types[-1].split(".")[1]
      and 1 <= final.usage.output_tokens <= 16, final)
plain = client.responses.create(model=model, input=QUESTION, instructions="Answer briefly.",
                                max_output_tokens=16, temperature=0)
check("stream: the same text as a whole body", final.output_text == plain.output_text,
      (final.output_text, plain.output_text))

names, args = [], ""
with client.responses.stream(model=model, input=ask, tools=[WEATHER], tool_choice="required",
                             parallel_tool_calls=False, max_output_tokens=60, temperature=0) as stream:
    for event in stream:
        if event.type == "response.output_item.added" and event.item.type == "function_call":
            names.append(event.item.name)
        if event.type == "response.function_call_arguments.delta":
            args += event.delta
    final = stream.get_final_response()
check("stream tools: function_call events", names and names[0] == "get_weather", names)
check("stream tools: arguments", final.output[0].arguments.startswith(args[:5]) and bool(args), (args, final.output))

# Time to the first text: Responses vs chat completions, same prompt, same server.
def first_text_seconds(fn):
    start = time.monotonic()
    for event in fn():
        if event:
            return time.monotonic() - start
    return None


def responses_first():
    with client.responses.stream(model=model, input=QUESTION, max_output_tokens=8, temperature=0) as s:
        for e in s:
            if e.type == "response.output_text.delta":
                yield True
                return


def chat_first():
    for c in client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                            max_tokens=8, temperature=0, stream=True):
        if c.choices and c.choices[0].delta.content:
            yield True
            return


# Alternating, five rounds each; the medians are printed (a measurement, not a check).
times = {"responses": [], "chat": []}
for _ in range(5):
    for name, fn in (("responses", responses_first), ("chat", chat_first)):
        times[name].append(first_text_seconds(fn))
for name, ts in times.items():
    check(f"time to first text ({name})", all(t is not None for t in ts), ts)
    print(f"ttft {name} median {sorted(ts)[2] * 1000:.1f} ms over {len(ts)} rounds")

# --- input_tokens -----------------------------------------------------------------------
counted = client.post("/responses/input_tokens", cast_to=object,
                      body={"model": model, "input": QUESTION, "instructions": "Answer briefly."})
check("input_tokens", counted["object"] == "response.input_tokens" and counted["input_tokens"] == plain.usage.input_tokens,
      (counted, plain.usage))

# --- errors -----------------------------------------------------------------------------
def refused(name, cls, pred, **kwargs):
    try:
        client.responses.create(model=model, input="hi", max_output_tokens=4, **kwargs)
        check(name, False, "accepted")
    except cls as e:
        check(name, pred(e), e)


refused("previous_response_id → 400", openai.BadRequestError, lambda e: e.param == "previous_response_id",
        previous_response_id="resp_123")
refused("store: true → 400", openai.BadRequestError, lambda e: e.param == "store", store=True)
refused("background → 400", openai.BadRequestError, lambda e: e.param == "background", background=True)
refused("conversation → 400", openai.BadRequestError, lambda e: e.param == "conversation", conversation="conv_1")
refused("built-in tool → 400", openai.BadRequestError, lambda e: e.param == "tools[0].type",
        tools=[{"type": "web_search"}])
refused("unknown field → 400", openai.BadRequestError, lambda e: e.param == "mirostat", extra_body={"mirostat": 2})
refused("temperature → 400", openai.BadRequestError, lambda e: e.param == "temperature", temperature=5)
try:
    client.responses.create(model="gpt-4o", input="hi")
    check("unknown model → NotFoundError", False)
except openai.NotFoundError as e:
    check("unknown model → NotFoundError", e.code == "model_not_found", e)
try:
    client.responses.retrieve("resp_123")
    check("retrieve → NotFoundError", False)
except openai.NotFoundError as e:
    check("retrieve → NotFoundError (not stored)", "not store" in e.message, e)
try:
    client.responses.delete("resp_123")
    check("delete → NotFoundError", False)
except openai.NotFoundError as e:
    check("delete → NotFoundError", e.status_code == 404, e)
try:
    make_client("nobody:wrong").responses.create(model=model, input="hi")
    check("AuthenticationError", False)
except openai.AuthenticationError as e:
    check("AuthenticationError", e.status_code == 401, e)
try:
    for _ in range(4):
        make_client(limited).responses.create(model=model, input="hi", max_output_tokens=1)
    check("RateLimitError", False)
except openai.RateLimitError as e:
    check("RateLimitError", e.status_code == 429 and e.code == "rate_limit_exceeded", e)

print(f"all Responses checks passed: {client_checks.passed}")
