"""The engine's read-only HTTP face for training jobs: each job's live risk (``docs/agent.md``).

Kept free of web-framework imports so a training job can import the payload schema
(``seamguard.service.schema``) without loading the server: the app is in ``.app``, the
background runner in ``.server``.
"""
