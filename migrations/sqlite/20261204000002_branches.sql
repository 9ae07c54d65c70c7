-- Same as migrations/postgres: a session's exchanges as a tree of branches; every existing
-- session becomes a single branch, each exchange following the one before it.
ALTER TABLE messages ADD COLUMN parent_id BLOB;
UPDATE messages SET parent_id = p.previous
FROM (SELECT id, LAG(id) OVER (PARTITION BY chat_session_id ORDER BY created_at, id) AS previous
      FROM messages) AS p
WHERE p.id = messages.id AND p.previous IS NOT NULL;
CREATE INDEX messages_parent_idx ON messages (parent_id, created_at, id);
CREATE INDEX messages_roots_idx ON messages (chat_session_id, created_at, id) WHERE parent_id IS NULL;

ALTER TABLE chat_sessions ADD COLUMN active_message_id BLOB;
ALTER TABLE chat_sessions ADD COLUMN active_set_at TEXT;
ALTER TABLE chat_sessions ADD COLUMN summary_through BLOB;

-- A summary made before branches covers the session's one branch, through its newest exchange.
UPDATE chat_sessions SET summary_through = (
    SELECT m.id FROM messages m WHERE m.chat_session_id = chat_sessions.id
    ORDER BY m.created_at DESC, m.id DESC LIMIT 1)
WHERE summary <> '';
