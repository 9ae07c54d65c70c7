-- Model tokens of answers whose sessions were deleted, so a user's daily token budget still
-- counts them after a restart (it is read from stored usage). Only the last day's are kept:
-- older rows are pruned at each deletion.
CREATE TABLE usage_of_deleted_answers (
    user_id     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    tokens      BIGINT NOT NULL
);
CREATE INDEX usage_of_deleted_answers_user_idx ON usage_of_deleted_answers (user_id, created_at);
