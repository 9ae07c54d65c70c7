-- The fencing token under which another process continues an answer whose process died
-- (cluster mode): an answer is finished only under the token of the process writing it, so a
-- process paused past its lease cannot store an answer that another has taken over. 0: the
-- answer's first process.
ALTER TABLE messages ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
