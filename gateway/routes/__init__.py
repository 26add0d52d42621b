"""One blueprint per OpenAI resource, each registered by the app factory."""
