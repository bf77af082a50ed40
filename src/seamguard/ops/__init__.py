"""What an operator tells seamguard: pause, pin, maintenance windows and approvals (``docs/operating.md``)."""
