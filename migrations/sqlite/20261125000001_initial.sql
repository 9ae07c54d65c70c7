-- Same schema as migrations/postgres, in SQLite's types: UUIDs as 16-byte BLOBs, timestamps
-- as RFC 3339 text, JSON as TEXT, booleans as INTEGER.

CREATE TABLE posts (
    id          BLOB PRIMARY KEY,
    owner_id    TEXT NOT NULL,
    url         TEXT NOT NULL,
    title       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX posts_owner_idx ON posts (owner_id);

CREATE TABLE post_expanded (
    post_id  BLOB PRIMARY KEY REFERENCES posts (id) ON DELETE CASCADE,
    content  TEXT NOT NULL,
    summary  TEXT NOT NULL
);

CREATE TABLE chat_sessions (
    id               BLOB PRIMARY KEY,
    user_id          TEXT NOT NULL,
    post_id          BLOB NOT NULL REFERENCES posts (id),
    title            TEXT NOT NULL,
    summary          TEXT NOT NULL DEFAULT '',
    last_summary_at  TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX chat_sessions_user_idx ON chat_sessions (user_id, updated_at);

CREATE TABLE messages (
    id                 BLOB PRIMARY KEY,
    chat_session_id    BLOB NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    client_message_id  TEXT,
    user_message       TEXT NOT NULL,
    ai_response        TEXT NOT NULL DEFAULT '',
    intent_type        TEXT NOT NULL CHECK (intent_type IN ('question', 'social_post')),
    posts              TEXT NOT NULL DEFAULT '[]',
    status             TEXT NOT NULL
                       CHECK (status IN ('streaming', 'complete', 'stopped', 'interrupted', 'error')),
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    CONSTRAINT messages_client_message_id_key UNIQUE (chat_session_id, client_message_id)
);
CREATE INDEX messages_session_created_idx ON messages (chat_session_id, created_at);
CREATE INDEX messages_streaming_idx ON messages (status) WHERE status = 'streaming';

CREATE TABLE user_preferences (
    user_id     TEXT PRIMARY KEY,
    voice       TEXT NOT NULL,
    style       TEXT NOT NULL,
    platforms   TEXT NOT NULL,
    hashtags    INTEGER NOT NULL,
    emoji       INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);
