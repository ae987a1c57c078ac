"""The demo agent `make run` seeds: echoes the prompt, counts visits per session, asks the LLM."""

import hub

prompt = hub.get_prompt()
history = hub.get_chat_history()
hub.set_progress(10, "reading the conversation")

visits = int(hub.get_user_vars().get("visits", "0")) + 1
hub.set_user_var("visits", str(visits))

greeting = hub.get_env_vars().get("GREETING", "Hello")
hub.send_message(f"{greeting}! You said: {prompt}")
hub.send_message(f"This session has {len(history)} message(s) so far; this is visit #{visits}.")

hub.set_progress(50, "asking the LLM")
try:
    # Through the dispatcher (the sandbox has no network): Gemini, or fakegemini's canned answer in `make run`.
    hub.send_message(hub.call_llm(f"Answer in one short sentence: {prompt}", max_output_tokens=100))
except hub.HubError as exc:  # no key, batch transport, Gemini down: the agent decides what to do
    hub.log(f"call_llm unavailable: {exc}", level="warning")
hub.log(f"demo agent answered visit {visits}")
