"""Drives a running server with LangChain's ChatOpenAI / OpenAIEmbeddings (langchain-openai,
pinned in .ci/setup), the way applications use OpenAI-compatible servers.

Usage: langchain_client.py BASE_URL CREDENTIAL CA_PEM MODEL_ID [ignored...]. Exits non-zero
on the first failed check; prints one line per check and a count at the end.
"""
import json
import ssl
import sys
from typing import Literal

import client_checks
import jsonschema
import openai
from client_checks import check
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

base_url, credential, ca_pem, model = sys.argv[1:5]
tls = ssl.create_default_context(cafile=ca_pem)
common = dict(model=model, base_url=base_url, api_key=credential, max_retries=0,
              http_client=openai.DefaultHttpxClient(verify=tls))


llm = ChatOpenAI(temperature=0, max_tokens=24, **common)

# Streaming chat.
chunks = list(llm.stream([HumanMessage("What is the capital of France?")]))
text = "".join(c.content for c in chunks)
check("stream: text arrives in pieces", len(chunks) > 2 and text, chunks)
whole = llm.invoke([HumanMessage("What is the capital of France?")])
check("stream and invoke agree (greedy)", whole.content == text, (whole.content, text))
check("usage metadata", whole.usage_metadata and whole.usage_metadata["output_tokens"] > 0, whole.usage_metadata)


# Structured output (response_format json_schema from a pydantic model).
class Pet(BaseModel):
    name: str = Field(max_length=20)
    kind: Literal["cat", "dog", "bird"]
    age: int = Field(ge=0, le=30)


structured = ChatOpenAI(temperature=0, max_tokens=120, **common).with_structured_output(
    Pet, method="json_schema", include_raw=True)
out = structured.invoke("Describe a pet as JSON.")
pet = out["parsed"]
check("structured output parses into the pydantic model", isinstance(pet, Pet), out)
jsonschema.validate(json.loads(out["raw"].content), Pet.model_json_schema())
check("structured output validates against the schema", True)


# Tool calling.
class get_weather(BaseModel):
    """Current weather in a city."""
    city: str = Field(max_length=30)


tool_llm = ChatOpenAI(temperature=0, max_tokens=100, **common).bind_tools(
    [get_weather], tool_choice="get_weather", parallel_tool_calls=False)
ai = tool_llm.invoke("What is the weather in Paris?")
check("tool call parsed by LangChain", len(ai.tool_calls) == 1 and ai.tool_calls[0]["name"] == "get_weather",
      ai)
check("tool call arguments", isinstance(ai.tool_calls[0]["args"].get("city"), str), ai.tool_calls)
answer = ChatOpenAI(temperature=0, max_tokens=30, **common).bind_tools([get_weather]).invoke([
    HumanMessage("What is the weather in Paris?"), ai,
    ToolMessage("22 degrees and sunny", tool_call_id=ai.tool_calls[0]["id"])])
# The answer after the tool result agrees with its finish_reason: calls exactly when it
# says tool_calls, else text (cut at max_tokens = 30 when it says length).
finish = answer.response_metadata.get("finish_reason")
usage = answer.response_metadata.get("token_usage") or {}
check("tool result round trip",
      (finish == "tool_calls" and len(answer.tool_calls) > 0) or
      (finish == "stop" and not answer.tool_calls and bool(answer.content)) or
      (finish == "length" and not answer.tool_calls and usage.get("completion_tokens") == 30),
      answer)

# Streaming tool call.
streamed = None
for c in tool_llm.stream("What is the weather in Paris?"):
    streamed = c if streamed is None else streamed + c
check("streamed tool call", streamed.tool_calls and streamed.tool_calls[0]["name"] == "get_weather",
      streamed)

# Embeddings (no tiktoken length check: that downloads encodings; this server counts itself).
emb = OpenAIEmbeddings(model=model, base_url=base_url, api_key=credential, max_retries=0,
                       check_embedding_ctx_length=False, http_client=openai.DefaultHttpxClient(verify=tls))
vecs = emb.embed_documents(["a cat", "a dog"])
check("embeddings", len(vecs) == 2 and len(vecs[0]) == len(emb.embed_query("a bird")) > 100, len(vecs))

print(f"all LangChain checks passed: {client_checks.passed}")
