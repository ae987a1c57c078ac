// Next.js (App Router) route handler: the browser's EventSource connects here; this proxies the agent hub's
// session stream (GET /api/sessions/<sessionId>/events on the `web` process) with one fetch, body untouched.
// The browser never sees INGRESS_TOKEN; this route checks that the session is the signed-in user's.
//
// Env: FLASK_SERVER_URL (the hub's `web`, as the invoke route uses it), INGRESS_TOKEN (the invoke call's token).
import { auth } from "@/lib/auth";
import { prisma } from "@/lib/prisma";

const FLASK_SERVER_URL = process.env.FLASK_SERVER_URL || "http://localhost:5000";

export const runtime = "nodejs"; // a long-lived streamed response
export const dynamic = "force-dynamic"; // never cached or prerendered

export async function GET(req: Request, { params }: { params: Promise<{ sessionId: string }> }) {
  const { sessionId } = await params;
  const user = await auth();
  if (!user) return Response.json({ error: "Unauthorized" }, { status: 401 });
  const session = await prisma.session.findFirst({ where: { id: sessionId, userId: user.id }, select: { id: true } });
  if (!session) return Response.json({ error: "session_not_found" }, { status: 404 });

  // Resume where the browser left off: EventSource sends Last-Event-ID when it reconnects by itself;
  // ?after=<id> lets a page that already shows events up to <id> start after them.
  const after = new URL(req.url).searchParams.get("after");
  const lastEventId = req.headers.get("last-event-id");
  const upstream = await fetch(
    `${FLASK_SERVER_URL}/api/sessions/${encodeURIComponent(sessionId)}/events${after ? `?after=${encodeURIComponent(after)}` : ""}`,
    {
      headers: {
        Accept: "text/event-stream",
        Authorization: `Bearer ${process.env.INGRESS_TOKEN}`,
        ...(lastEventId ? { "Last-Event-ID": lastEventId } : {}),
      },
      cache: "no-store",
      signal: req.signal, // the browser left: the upstream stream is closed at once, freeing it on the hub
    },
  );
  if (!upstream.ok || !upstream.body) {
    // The hub's JSON error ({error, message}), status kept: 404 unknown session, 503 database unavailable.
    return new Response(await upstream.text(), {
      status: upstream.status,
      headers: { "Content-Type": "application/json" },
    });
  }
  return new Response(upstream.body, {
    headers: {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache, no-transform",
      "X-Accel-Buffering": "no", // nginx and similar proxies: pass each event on at once
    },
  });
}
