"""The reference chat-template renderer for the parity tests (issue 28): Hugging Face
transformers' own `render_jinja_template`, the function `apply_chat_template` calls, on
exactly the template-facing input our server built (messages, tools, special tokens).

Reads a JSON file {"cases": [{"template": PATH, "messages": [...], "tools": [...]|null,
"extra": {NAME: VALUE}, "bos_token": S, "eos_token": S}]} and writes {"results": [{"output": S} | {"error": S}]}
in the same order to the path given second ("mutable": true where only a mutable sandbox
renders it, see `render`). Run with TZ=UTC (our `strftime_now` is UTC).
"""
import json
import sys

import jinja2.sandbox
from transformers.utils import chat_template_utils
from transformers.utils.chat_template_utils import render_jinja_template


def render(case, sources):
    """The reference render; where transformers' immutable sandbox refuses a list
    mutation (Kimi K2's templates append to a list), the same environment with a mutable
    sandbox, reported as such ("mutable": true)."""
    out = render_once(case, sources)
    if "unsafe" in out.get("error", "") and "'list' object" in out.get("error", ""):
        immutable = chat_template_utils.ImmutableSandboxedEnvironment
        chat_template_utils.ImmutableSandboxedEnvironment = jinja2.sandbox.SandboxedEnvironment
        chat_template_utils._compile_jinja_template.cache_clear()
        try:
            out = dict(render_once(case, sources), mutable=True, immutable_error=out["error"])
        finally:
            chat_template_utils.ImmutableSandboxedEnvironment = immutable
            chat_template_utils._compile_jinja_template.cache_clear()
    return out


def render_once(case, sources):
    path = case["template"]
    if path not in sources:
        with open(path, encoding="utf-8") as f:
            sources[path] = f.read()
    try:
        rendered, _ = render_jinja_template(
            conversations=[case["messages"]],
            tools=case.get("tools"),
            chat_template=sources[path],
            add_generation_prompt=True,
            bos_token=case["bos_token"],
            eos_token=case["eos_token"],
            **case.get("extra", {}),
        )
        return {"output": rendered[0]}
    except Exception as e:  # the template raised (raise_exception, a type error, ...)
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    sources = {}
    results = [render(c, sources) for c in cases]
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump({"results": results}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
