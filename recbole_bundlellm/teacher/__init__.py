"""The teacher: any OpenAI-compatible chat endpoint, called through a call cache (the knowledge store)."""
