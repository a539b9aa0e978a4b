"""An agent loop in miniature: a (stand-in) model writes Python, the agent
records the model call, asks ninewall to run the code under
code_generate_new, and asks `reason` to check the answer; every step is in
one provenance chain (`ninewall audit show --story EXEC`).

    PYTHONPATH=clients/python NINEWALL_SOCKET=/run/ninewall/ninewall.sock \\
        python3 clients/python/examples/agent_loop.py
"""

import ninewall


def model(prompt: str) -> str:
    # Stand-in for an LLM: returns code for the task.
    return "import statistics\nprint(statistics.median([3, 1, 4, 1, 5, 9, 2, 6]))"


def main() -> int:
    task = "What is the median of 3, 1, 4, 1, 5, 9, 2, 6?"
    code = model(task)
    rec = ninewall.llm_call(model="stand-in", prompt=task, response=code, purpose="write code for the task")
    run = ninewall.call("code_generate_new", ["-c", code], caused_by=rec)
    print("code_generate_new:", run.code(), run.stdout.decode().strip(), "exec", run.exec_id)
    if not run.ok:
        print(run.stderr.decode())
        return 1
    answer = run.stdout.decode().strip()
    check = ninewall.call("reason", ["-c", f"print(float({answer!r}) == 3.5)"], caused_by=rec)
    print("reason:", check.code(), check.stdout.decode().strip(), "exec", check.exec_id)
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
