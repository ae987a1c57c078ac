"""Building an agent's context from the hub's tables."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.db import Pool, run_with_retry
from core.sqlfiles import query
from dispatcher import agentlimits
from dispatcher.agentfiles import AgentFileRow
from dispatcher.claim import Claimed
from hubpy.hub._httprecord import AGENT_ALLOW_VAR
from hubpy.hub._redact import Redactor
from hubpy.hub._secrets import SecretBox, withhold


class AgentGone(Exception):
    """The agent row no longer exists."""


@dataclass(frozen=True)
class AgentContext:
    context: dict[str, Any]  # what hub.py receives (see dispatcher/bundle.py): no SECRET_* env var in it
    files: list[AgentFileRow]
    history_total: int       # messages in the session (before any window)
    # The agent's SECRET_* env vars: withheld from the sandbox, used by hub.http only (dispatcher/httpcalls.py).
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def nonce(self) -> str:
        return str(self.context["nonce"])

    def redactor(self) -> Redactor:
        """Masks every env var value of the agent in what is stored or logged; the secrets also in the forms an
        echoing server hands them back in (percent-encoded, base64, ...). Not the hub's own settings (NOT_SECRET:
        HUB_HTTP_ALLOW names hosts every hub.http JobLog line names anyway; the run limits are quoted by theirs)."""
        return SecretBox(self.secrets, also_mask=masked_env_values(self.context["env_vars"])).log_redactor


# The hub's own settings an author sets as env vars: they name hosts or limits, and JobLog lines quote them.
NOT_SECRET = frozenset({AGENT_ALLOW_VAR, *agentlimits.RESERVED})


def masked_env_values(env_vars: dict[str, str]) -> list[str]:
    return [v for k, v in env_vars.items() if k not in NOT_SECRET]


def _iso(ts: Any) -> str:
    if isinstance(ts, datetime):
        return ts.isoformat(timespec="milliseconds") + ("" if ts.tzinfo else "Z")
    text = str(ts)
    # json_build_object renders TIMESTAMP(3) without a zone; Prisma's values are UTC.
    return text if text.endswith("Z") or "+" in text[10:] else text + "Z"


def load(pool: Pool, row: Claimed, *, transport: str, history_limit: int, retry_s: float = 60.0) -> AgentContext:
    params = {"agent_id": row.agent_id, "session_id": row.session_id, "history_limit": history_limit}
    # Retried like the writes: after a Postgres restart the pool may hand out a dead connection first.
    data = run_with_retry(pool, lambda c: c.execute(query("dispatcher/context"), params).fetchone(), retry_s=retry_s)
    if data is None:
        raise AgentGone(f"agent {row.agent_id} no longer exists")
    history = [
        {"role": m["role"], "content": m["content"], "timestamp": _iso(m["timestamp"])}
        for m in data["chat_history"]
    ]
    env_vars, withheld = withhold(dict(data["env_vars"]))
    context: dict[str, Any] = {
        "version": 1,
        "nonce": secrets.token_hex(8),
        "transport": transport,
        "agent": {"id": data["agent_id"], "name": data["agent_name"], "version": data["agent_version"]},
        "job_id": row.job_id,
        "attempt": row.attempts,  # 1, 2, …: hub.get_attempt(), for an agent that makes outside effects idempotent
        "session_id": row.session_id,
        "user_id": row.user_id,
        "prompt": row.prompt,
        "env_vars": env_vars,
        "user_vars": dict(data["user_vars"]),
        "chat_history": history,
        "history_cut": int(data["history_total"]) - len(history),  # left out by HISTORY_MAX_MESSAGES
    }
    files = [AgentFileRow(filename=f["filename"], filepath=f["filepath"], filesize=f["filesize"]) for f in data["files"]]
    return AgentContext(context=context, files=files, history_total=int(data["history_total"]), secrets=withheld)


def job_status(pool: Pool, job_id: str, *, retry_s: float = 60.0) -> str | None:
    """The Job's status now (None: the hub deleted it): a claim that could not move it is checked with this."""
    row = run_with_retry(pool, lambda c: c.execute(query("dispatcher/job_status"), {"job_id": job_id}).fetchone(),
                         retry_s=retry_s)
    return row["status"] if row else None


def agent_exists(pool: Pool, agent_id: str, *, retry_s: float = 60.0) -> bool:
    row = run_with_retry(pool, lambda c: c.execute(query("dispatcher/agent_exists"), {"agent_id": agent_id}).fetchone(),
                         retry_s=retry_s)
    return bool(row and row["present"])


def session_owner(pool: Pool, session_id: str, *, retry_s: float = 60.0) -> tuple[str, str] | None:
    """(user id, agent id) of a session; None: no such session."""
    row = run_with_retry(pool, lambda c: c.execute(query("dispatcher/session_owner"), {"session_id": session_id})
                         .fetchone(), retry_s=retry_s)
    return None if row is None else (str(row["user_id"]), str(row["agent_id"]))
