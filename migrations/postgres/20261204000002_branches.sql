-- A session's exchanges as a tree of branches (regenerate, edit). `parent_id`: the exchange an
-- exchange follows (NULL for a first one); every existing session becomes a single branch,
-- each exchange following the one before it. It is set when the exchange is inserted and never
-- changed, so the answer's final update stays a HOT update (no index covers a column it sets).
ALTER TABLE messages ADD COLUMN parent_id UUID;
UPDATE messages m SET parent_id = p.previous
FROM (SELECT id, LAG(id) OVER (PARTITION BY chat_session_id ORDER BY created_at, id) AS previous
      FROM messages) p
WHERE m.id = p.id AND p.previous IS NOT NULL;
-- The children of an exchange in creation order (its siblings, a branch's newest descendant);
-- the path from an exchange to its root walks the primary key.
CREATE INDEX messages_parent_idx ON messages (parent_id, created_at, id);
-- A session's first exchanges (the children of its root), in creation order.
CREATE INDEX messages_roots_idx ON messages (chat_session_id, created_at, id) WHERE parent_id IS NULL;

-- The branch a client selected (`chat:branch:select`): its newest exchange, and when it was
-- selected. The active branch ends there until a newer exchange is made; then at the newest.
ALTER TABLE chat_sessions ADD COLUMN active_message_id UUID;
ALTER TABLE chat_sessions ADD COLUMN active_set_at TIMESTAMPTZ;
-- The newest exchange the summary covers: a branch that does not pass through it does not use it.
ALTER TABLE chat_sessions ADD COLUMN summary_through UUID;

-- A summary made before branches covers the session's one branch, through its newest exchange.
UPDATE chat_sessions SET summary_through = (
    SELECT m.id FROM messages m WHERE m.chat_session_id = chat_sessions.id
    ORDER BY m.created_at DESC, m.id DESC LIMIT 1)
WHERE summary <> '';
