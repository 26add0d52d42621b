"""The OpenAI side: request and answer translation, SSE streams and their relay."""
