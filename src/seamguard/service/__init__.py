"""The daemon's HTTP API (``docs/agent.md``, ``docs/security.md``): each job's live risk, status,
economics, metrics and push, behind one authentication layer. The app is in ``.app``, the
background runner in ``.server``; a training job reads the risk with ``seamguard.agent``, which
imports nothing of this package.
"""
