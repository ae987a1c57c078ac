-- upsert_user_var: hub.set_user_var, written the way Prisma's upsert does.
INSERT INTO "UserVariable" ("id", "key", "value", "createdAt", "updatedAt", "sessionId")
VALUES (%(id)s, %(key)s, %(value)s, now(), now(), %(session_id)s)
ON CONFLICT ("sessionId", "key") DO UPDATE
SET "value" = EXCLUDED."value", "updatedAt" = EXCLUDED."updatedAt"
