"""``seamguard gateway``: the admission gateway in front of OpenAI-compatible inference endpoints
(``docs/serving.md``): per-key token budgets reserved at admission and settled on completion,
rate limits per key and tenant, zombie keys, circuit breakers per upstream and a retry budget."""
