"""The Workers AI side: the HTTP client, its body reader, the account pool, retries,
Cloudflare's error codes and the model catalogue."""
