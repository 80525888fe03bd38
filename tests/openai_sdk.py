"""Drives a running server with the official openai Python SDK, as an application would.

Usage: openai_sdk.py BASE_URL CREDENTIAL CA_PEM MODEL_ID. Exits non-zero on the first
failed check; prints one line per check.
"""
import ssl
import sys

import openai

base_url, credential, ca_pem, model = sys.argv[1:5]
client = openai.OpenAI(
    base_url=base_url,
    api_key=credential,
    max_retries=0,
    http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca_pem)),
)


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name} {detail}")
        sys.exit(1)
    print(f"ok   {name}")


models = client.models.list()
check("models.list", [m.id for m in models.data] == [model], models)
check("models.retrieve", client.models.retrieve(model).id == model)

r = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "Answer briefly."},
              {"role": "user", "content": "What is the capital of France?"}],
    max_tokens=16, temperature=0,
)
text = r.choices[0].message.content
check("chat.completions", bool(text) and r.choices[0].finish_reason in ("stop", "length"), r)
check("chat usage", r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0, r.usage)

stream = client.chat.completions.create(
    model=model, messages=[{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": "What is the capital of France?"}],
    max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True},
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

c = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=5, temperature=0)
check("completions", c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 5, c)

try:
    openai.OpenAI(base_url=base_url, api_key="nobody:wrong", max_retries=0,
                  http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca_pem))
                  ).models.list()
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

print("all SDK checks passed")
