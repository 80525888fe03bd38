"""The check helper both client scripts (openai_sdk.py, langchain_client.py) use: print
one line per check, stop at the first failure with a non-zero exit, count the passes."""
import sys

passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAIL {name} {detail}")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}")
