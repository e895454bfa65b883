"""What the commands of one batch (or one group commit, dispatch/group_commit.py) share.

The dispatcher (dispatcher.py) consults it for every command it runs in a batch: the tokens
already checked, the bytes the batch's answers may still take (MAX_BATCH_ANSWER), and
the answer every later command gets at once when the batch cannot go on.
"""

from dataclasses import dataclass, field
from typing import Any

from incident_rpc.access.auth import Caller
from incident_rpc.errors import AnswerTooLarge, to_envelope
from incident_rpc.runtime import jsonio


@dataclass
class Batch:
    """The state that one batch's commands share (see the module docstring)."""

    # Callers by token, checked once per batch; forgotten when a command that `revokes`
    # (logout, key_revoke, user_update, ...) succeeds, so its effect shows at once.
    callers: dict[str, Caller] = field(default_factory=dict)
    # Bytes the batch's answers may add up to (MAX_BATCH_ANSWER); None for a group
    # commit, whose commands come from separate requests, each with its own answer.
    answer_limit: int | None = None
    answered: int = 0  # bytes of the answers so far
    # The answer every later command gets without running: the database is gone (rather
    # than one connection timeout each), or the answers reached their limit.
    refusal: dict[str, Any] | None = None

    def spend(self, answers: list[Any]) -> None:
        """Count successful answers against the limit, before their commands commit.

        Raises AnswerTooLarge (413) when they would pass it: their commands are undone,
        and when it is one command, the rest of the batch gets the same answer without
        running, so what the batch did is the commands before the first 413. (Several,
        from one `many` call, then run one by one to find where that is.)
        """
        if self.answer_limit is None:
            return
        size = sum(len(jsonio.encode(answer)) for answer in answers)
        if self.answered + size > self.answer_limit:
            error = AnswerTooLarge(self.answer_limit)
            if len(answers) == 1:
                self.refusal = to_envelope(error)
            raise error
        self.answered += size
