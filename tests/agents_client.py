"""Runs an OpenAI Agents SDK (PyPI `openai-agents`) agent against a running server through
its Responses model, as an application would: one function tool, a `key_id:api_key`
key, TLS with the server's own certificate, to a final answer that used the tool.

Usage: agents_client.py BASE_URL CREDENTIAL CA_PEM MODEL_ID
Exits non-zero on the first failed check; prints one line per check and a count at the end.
"""
import ssl
import sys

import client_checks
import httpx
from agents import Agent, ModelSettings, Runner, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from client_checks import check
from openai import AsyncOpenAI

base_url, credential, ca_pem, model = sys.argv[1:5]

# Traces would go to OpenAI's own servers; this run talks to the appliance only.
set_tracing_disabled(True)

SECRET = "4242"
calls = []


# Offered until it has run once: the next turn answers from its result (a model this small
# would otherwise call it again and again).
@function_tool(is_enabled=lambda ctx, agent: not calls)
def get_secret_number() -> str:
    """Returns the secret number."""
    calls.append(1)
    return SECRET


client = AsyncOpenAI(
    base_url=base_url,
    api_key=credential,
    max_retries=0,
    http_client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca_pem)),
)
agent = Agent(
    name="assistant",
    instructions="You answer with the secret number. Call get_secret_number to learn it, then reply with it.",
    model=OpenAIResponsesModel(model=model, openai_client=client),
    tools=[get_secret_number],
    # The first turn must call the tool; the SDK resets the choice afterwards (its default).
    model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=200),
)
result = Runner.run_sync(agent, "What is the secret number?", max_turns=4)
check("agent: the tool ran", len(calls) >= 1, calls)
items = [type(i).__name__ for i in result.new_items]
check("agent: a tool call, its output, then a message", "ToolCallItem" in items and "ToolCallOutputItem" in items
      and items[-1] == "MessageOutputItem", items)
check("agent: a final answer that used the tool's result", isinstance(result.final_output, str)
      and SECRET in result.final_output, result.final_output)
usage = result.context_wrapper.usage
check("agent: usage counted over the run", usage.requests >= 2 and usage.input_tokens > 0 and usage.output_tokens > 0,
      usage)
print(f"final answer: {result.final_output!r}")

# Issue 29: the same agent with a budget too small for its forced call. The call is cut;
# the server never returns the call's raw text as an answer, so the agent cannot take it
# for its final output: the run either stops on the incomplete response or ends without
# that text, and no tool ran on cut arguments.
calls.clear()
short = agent.clone(model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False,
                                                 temperature=0, max_tokens=8))
try:
    cut = Runner.run_sync(short, "What is the secret number?", max_turns=2)
    outcome = repr(cut.final_output)
except Exception as e:  # the SDK's own refusal of an incomplete response
    outcome = f"{type(e).__name__}: {e}"
print(f"small max_tokens: {outcome}")
check("agent, small max_tokens: no tool ran on a cut call", not calls, calls)
check("agent, small max_tokens: no call text taken as the answer",
      "tool_calls" not in outcome and '{"name"' not in outcome and "get_secret_number" not in outcome, outcome)
print(f"all Agents SDK checks passed: {client_checks.passed}")
