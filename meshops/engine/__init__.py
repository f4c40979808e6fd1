"""The step engine: playbooks in, journaled and resumable runs out."""
