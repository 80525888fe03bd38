"""What the client scripts share: the check helper (print one line per check, stop at the
first failure with a non-zero exit, count the passes) and an openai client that trusts
exactly the test server's certificate."""
import ssl
import sys

import openai

passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAIL {name} {detail}")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}")


def openai_client(base_url, key, ca_pem):
    return openai.OpenAI(
        base_url=base_url,
        api_key=key,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca_pem)),
    )
