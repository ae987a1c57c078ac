"use client";
// Browser side: render an agent's answer as it streams. `delta` events append to a draft of the message;
// the `message` event replaces the draft with the stored text. EventSource reconnects by itself after a
// drop, sending Last-Event-ID, so nothing is missed and nothing is shown twice.
import { useEffect, useState } from "react";

type Shown = { id: string; role: string; text: string; done: boolean };

export function ChatStream({ sessionId }: { sessionId: string }) {
  const [messages, setMessages] = useState<Shown[]>([]);
  const [status, setStatus] = useState<string>("");

  useEffect(() => {
    const es = new EventSource(`/api/sessions/${encodeURIComponent(sessionId)}/events`);
    const upsert = (id: string, role: string, update: (old: string) => string, done: boolean) =>
      setMessages((list) => {
        const i = list.findIndex((m) => m.id === id);
        if (i < 0) return [...list, { id, role, text: update(""), done }];
        const copy = list.slice();
        copy[i] = { ...copy[i], text: update(copy[i].text), done };
        return copy;
      });

    es.addEventListener("delta", (e) => {
      const d = JSON.parse((e as MessageEvent).data); // {jobId, messageId, index, text}
      upsert(d.messageId, "agent", (old) => old + d.text, false);
    });
    es.addEventListener("message", (e) => {
      const d = JSON.parse((e as MessageEvent).data); // {jobId, messageId, role, content, timestamp}
      upsert(d.messageId, d.role, () => d.content, true);
    });
    es.addEventListener("progress", (e) => {
      const d = JSON.parse((e as MessageEvent).data); // {jobId, progress, statusMessage}
      setStatus(`${d.progress}% ${d.statusMessage ?? ""}`);
    });
    es.addEventListener("status", (e) => {
      const d = JSON.parse((e as MessageEvent).data); // {jobId, status, errorMessage}
      setStatus(d.status === "FAILED" ? `failed: ${d.errorMessage}` : d.status.toLowerCase());
    });
    // The hub's own last event ({error: "slow_client" | "database_unavailable", lastEventId}) has data; the
    // browser's connection errors do not. Either way EventSource reconnects and resumes by itself.
    es.addEventListener("error", (e) => {
      if (e instanceof MessageEvent) console.info("stream ended by the hub:", JSON.parse(e.data).error);
    });
    return () => es.close();
  }, [sessionId]);

  return (
    <div>
      {messages.map((m) => (
        <p key={m.id} className={m.done ? "" : "streaming"}>
          <b>{m.role}:</b> {m.text}
        </p>
      ))}
      <small>{status}</small>
    </div>
  );
}
