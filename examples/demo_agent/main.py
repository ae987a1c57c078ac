"""The demo agent `make run` seeds: echoes the prompt and counts visits per session."""

import hub

prompt = hub.get_prompt()
history = hub.get_chat_history()
hub.set_progress(10, "reading the conversation")

visits = int(hub.get_user_vars().get("visits", "0")) + 1
hub.set_user_var("visits", str(visits))

greeting = hub.get_env_vars().get("GREETING", "Hello")
hub.send_message(f"{greeting}! You said: {prompt}")
hub.send_message(f"This session has {len(history)} message(s) so far; this is visit #{visits}.")
hub.log(f"demo agent answered visit {visits}")
