"""Admin area: users and roles, every user's history, and the audit log. Guarded once, in before_request."""
