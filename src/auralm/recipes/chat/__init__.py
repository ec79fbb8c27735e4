"""S3 chat: one LM that sees, hears and reads, in a multi-turn chat (docs/chat.md)."""
