"""Errors a key manager raises, each with a message fit to show a user as is."""


class HSMError(Exception):
    """Base class: something about the token or a key in it went wrong."""


class ModuleNotLoadable(HSMError):
    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot load the PKCS#11 module {path!r}: {reason}")
        self.path = path


class TokenUnavailable(HSMError):
    """The token cannot be used now (gone, unreachable, its module in trouble); it may come back: try again later."""

    def __init__(self, label: str, reason: str = ""):
        super().__init__(f"the token {label!r} is not available now" + (f": {reason}" if reason else ""))
        self.label = label


class TokenNotFound(TokenUnavailable):
    """No token with the label: misconfigured, or the token is not (yet, or no longer) present."""

    def __init__(self, label: str, available: list[str]):
        seen = ", ".join(repr(t) for t in available) or "none"
        HSMError.__init__(self, f"no token labelled {label!r} in the PKCS#11 module (tokens present: {seen})")
        self.label = label


class PinIncorrect(HSMError):
    def __init__(self, label: str):
        super().__init__(f"the token {label!r} refused the user PIN (wrong PIN)")


class PinLocked(HSMError):
    def __init__(self, label: str):
        super().__init__(f"the user PIN of token {label!r} is locked; the security officer must reset it")


class KeyNotFound(HSMError):
    def __init__(self, uri: str, kind: str = "private key"):
        super().__init__(f"no {kind} in the token matches {uri}")
        self.uri = uri


class MalformedURI(HSMError, ValueError):
    def __init__(self, uri: str, reason: str):
        super().__init__(f"malformed pkcs11: URI {uri!r}: {reason}")


class UnsupportedAlgorithm(HSMError, ValueError):
    pass


class KeyExists(HSMError):
    def __init__(self, label: str):
        super().__init__(f"a key labelled {label!r} already exists in the token")


class CiphertextInvalid(HSMError, ValueError):
    """Encrypted data that does not open: altered, sealed with other associated data, or under another key."""

    def __init__(self, uri: str, reason: str = "it was altered, or sealed under another key or with other associated data"):
        super().__init__(f"the encrypted data does not open with {uri}: {reason}")
        self.uri = uri
