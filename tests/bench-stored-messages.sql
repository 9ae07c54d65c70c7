-- For `tests/bench.sh stored`: :n finished exchanges in sessions of 500, of 2,000-odd users,
-- in a database the server has migrated.
INSERT INTO posts (id, owner_id, url, title, created_at)
  SELECT gen_random_uuid(), 'stored-' || g, 'https://example.com/stored', 'Stored', now()
  FROM generate_series(1, (:n + 499) / 500) g;
INSERT INTO post_expanded (post_id, content, summary) SELECT id, 'Stored post.', 'Stored.' FROM posts
  WHERE owner_id LIKE 'stored-%';
INSERT INTO chat_sessions (id, user_id, post_id, title, created_at, updated_at)
  SELECT gen_random_uuid(), owner_id, id, 'Stored', now(), now() FROM posts WHERE owner_id LIKE 'stored-%';
INSERT INTO messages (id, chat_session_id, client_message_id, user_message, ai_response,
    intent_type, posts, status, created_at, updated_at, prompt_tokens, completion_tokens,
    usage_estimated)
  SELECT gen_random_uuid(), s.id, 'm' || g, 'How does Rust keep idle connections cheap?',
    repeat('Rust futures are small state machines. ', 8), 'question', '[]', 'complete',
    now() - make_interval(secs => g), now(), 100, 50, false
  FROM chat_sessions s CROSS JOIN generate_series(1, 500) g
  WHERE s.user_id LIKE 'stored-%';
-- Each session one branch, each exchange following the one before it.
UPDATE messages m SET parent_id = p.previous
FROM (SELECT id, LAG(id) OVER (PARTITION BY chat_session_id ORDER BY created_at, id) AS previous
      FROM messages) p
WHERE m.id = p.id AND p.previous IS NOT NULL;
VACUUM ANALYZE;
-- The load's pages written out now, not during the measurement (a database holding these
-- messages would have written them long ago).
CHECKPOINT;
