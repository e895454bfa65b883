"""The one path from commands to answers: registry, batches, group commit, replay."""
