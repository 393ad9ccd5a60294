"""JSON API v1 for programs, authenticated with personal API tokens (``Authorization: Bearer ...``)."""
