"""Frontends: the `fewtune` command line and the Discord bot. They turn input into calls of the
core (`assistants`) and results into output; no business logic lives here."""
