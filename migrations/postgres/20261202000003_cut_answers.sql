-- An answer that stopped at ANSWER_MAX_TOKENS: stored complete, marked as cut.
ALTER TABLE messages ADD COLUMN cut BOOLEAN NOT NULL DEFAULT FALSE;
