"""Topic patterns with AMQP semantics, shared by every broker.

Words are separated by dots; ``*`` matches exactly one word and ``#`` matches
zero or more words::

    >>> topic_matches('msg.*', 'msg.ios')
    True
    >>> topic_matches('msg.#', 'msg')
    True
    >>> topic_matches('msg.*', 'msg.ios.v2')
    False
"""
from __future__ import annotations

import functools
import re

from .exceptions import ConfigurationError

__all__ = ['check_pattern', 'topic_matches']

_WORD = re.compile(r'^(?:[A-Za-z0-9_\-]+|\*|#)$')


def check_pattern(pattern: str) -> str:
    """Return *pattern* if every dot-separated word is a word, ``*`` or ``#``."""
    if not isinstance(pattern, str) or not all(_WORD.match(w) for w in pattern.split('.')):
        raise ConfigurationError(f'bad topic pattern {pattern!r}: words are [A-Za-z0-9_-], "*" or "#"')
    return pattern


@functools.lru_cache(maxsize=4096)
def topic_matches(pattern: str, topic: str) -> bool:
    """Whether routing key *topic* matches binding *pattern*."""
    return _match(tuple(pattern.split('.')), tuple(topic.split('.')) if topic else ())


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == '#':
        # '#' may swallow 0..len(words) words; try the shortest first.
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == '*' or head == words[0]) and _match(rest, words[1:])
