-- Posts, their expanded content, chat sessions, messages (one row per exchange) and
-- user preferences. Ids are UUID v7 made by the server.

CREATE TABLE posts (
    id          UUID PRIMARY KEY,
    owner_id    TEXT NOT NULL,
    url         TEXT NOT NULL,
    title       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX posts_owner_idx ON posts (owner_id);

CREATE TABLE post_expanded (
    post_id  UUID PRIMARY KEY REFERENCES posts (id) ON DELETE CASCADE,
    content  TEXT NOT NULL,
    summary  TEXT NOT NULL
);

CREATE TABLE chat_sessions (
    id               UUID PRIMARY KEY,
    user_id          TEXT NOT NULL,
    post_id          UUID NOT NULL REFERENCES posts (id),
    title            TEXT NOT NULL,
    summary          TEXT NOT NULL DEFAULT '',
    last_summary_at  TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX chat_sessions_user_idx ON chat_sessions (user_id, updated_at);

CREATE TABLE messages (
    id                 UUID PRIMARY KEY,
    chat_session_id    UUID NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    client_message_id  TEXT,
    user_message       TEXT NOT NULL,
    ai_response        TEXT NOT NULL DEFAULT '',
    intent_type        TEXT NOT NULL CHECK (intent_type IN ('question', 'social_post')),
    posts              JSONB NOT NULL DEFAULT '[]',
    status             TEXT NOT NULL
                       CHECK (status IN ('streaming', 'complete', 'stopped', 'interrupted', 'error')),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    CONSTRAINT messages_client_message_id_key UNIQUE (chat_session_id, client_message_id)
);
CREATE INDEX messages_session_created_idx ON messages (chat_session_id, created_at);
CREATE INDEX messages_streaming_idx ON messages (status) WHERE status = 'streaming';

CREATE TABLE user_preferences (
    user_id     TEXT PRIMARY KEY,
    voice       TEXT NOT NULL,
    style       TEXT NOT NULL,
    platforms   JSONB NOT NULL,
    hashtags    BOOLEAN NOT NULL,
    emoji       BOOLEAN NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
