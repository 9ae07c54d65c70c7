-- Model tokens per answer: as the provider reported them, or estimated with the tokenizer.
ALTER TABLE messages ADD COLUMN prompt_tokens INTEGER;
ALTER TABLE messages ADD COLUMN completion_tokens INTEGER;
ALTER TABLE messages ADD COLUMN usage_estimated INTEGER;
