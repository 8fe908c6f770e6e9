"""The one exception every broken data contract raises, from a bad byte to a failed expectation.

    >>> err = ContractViolation.read_error("train.tsv", "field count", "expected 5 fields, found 6",
    ...                                    line=4)
    >>> str(err)
    'train.tsv, line 4: field count: expected 5 fields, found 6'
    >>> err.file, err.line, err.rule, err.failures
    ('train.tsv', 4, 'field count', [])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data_contracts.validate import ExpectationResult


class ContractViolation(ValueError):
    """A file broke its contract: the message names the file, the rule, the failing rows.

    `failures` lists the failed expectations (empty when the file could not even be read);
    `line` is the 1-based line of a read error; `rule` names the broken rule of a read error
    ("utf-8", "empty file", "field count").
    """

    def __init__(self, file: str, message: str, *, failures: Sequence[ExpectationResult] = (),
                 line: int | None = None, rule: str | None = None):
        super().__init__(message)
        self.file = str(file)
        self.failures = list(failures)
        self.line = line
        self.rule = rule

    @classmethod
    def read_error(cls, file: str, rule: str, detail: str, *,
                   line: int | None = None) -> ContractViolation:
        """A file that cannot be read as the contract's format, before any expectation runs."""
        where = f"{file}, line {line}" if line is not None else str(file)
        return cls(file, f"{where}: {rule}: {detail}", line=line, rule=rule)

    def __reduce__(self):
        # Prefect pickles a failed task's exception; the default (cls(*args)) would lose `file`.
        return type(self), (self.file, str(self)), self.__dict__
