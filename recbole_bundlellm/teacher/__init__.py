"""The teacher: any OpenAI-compatible chat endpoint, called through the knowledge store."""
