"""Bundle generation: prompting an LLM over a session and parsing its answer into bundles."""
