"""Loading a PKCS#11 module so that several threads may use it at once.

python-pkcs11 calls ``C_Initialize(NULL)``. That tells the module the application
will never call it from two threads at once, and SoftHSM2 then runs without its
internal locks (two threads signing together fail with ``GeneralError``). We
initialise the module ourselves with ``CKF_OS_LOCKING_OK`` through ctypes, on the
same dlopen handle, and hand python-pkcs11 a ``lib`` subclass whose
``initialize`` accepts a module that is already initialised.

After ``fork()`` the child must initialise the module again (PKCS#11 v2.40
section 6.7.7); :func:`load` does so whenever it is called from a new process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator

import pkcs11
from pkcs11 import _pkcs11

from hsm.errors import ModuleNotLoadable

CKR_OK = 0x0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
CKF_OS_LOCKING_OK = 0x2

_CK_RV = ctypes.c_ulong


class _CInitializeArgs(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


class _FunctionListHead(ctypes.Structure):
    # Only the start of CK_FUNCTION_LIST: the version, then the first two entries.
    _fields_ = [
        ("major", ctypes.c_ubyte),
        ("minor", ctypes.c_ubyte),
        ("C_Initialize", ctypes.CFUNCTYPE(_CK_RV, ctypes.c_void_p)),
        ("C_Finalize", ctypes.CFUNCTYPE(_CK_RV, ctypes.c_void_p)),
    ]


class _Cryptoki:
    """C_Initialize / C_Finalize of one module, reached through its function list."""

    def __init__(self, path: str):
        try:
            handle = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise ModuleNotLoadable(path, str(exc)) from None
        try:
            get_function_list = handle.C_GetFunctionList
        except AttributeError:
            raise ModuleNotLoadable(path, "it does not export C_GetFunctionList; is it a PKCS#11 module?") from None
        get_function_list.restype = _CK_RV
        get_function_list.argtypes = [ctypes.POINTER(ctypes.POINTER(_FunctionListHead))]
        table = ctypes.POINTER(_FunctionListHead)()
        rv = get_function_list(ctypes.byref(table))
        if rv != CKR_OK:
            raise ModuleNotLoadable(path, f"C_GetFunctionList returned 0x{rv:x}")
        self._handle = handle  # keeps the library mapped
        self._table = table.contents

    def initialize(self) -> int:
        args = _CInitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
        return self._table.C_Initialize(ctypes.addressof(args))

    def finalize(self) -> int:
        return self._table.C_Finalize(None)


class _ThreadSafeLib(_pkcs11.lib):
    """python-pkcs11's ``lib`` whose initialisation asks for OS locking.

    ``initialize`` is a cpdef method, so python-pkcs11's own calls to it (from
    ``lib.__init__`` and ``pkcs11.lib()``) dispatch to this override.
    """

    def initialize(self):
        _ensure_initialized(self.so)


_lock = threading.Lock()
_cryptoki: dict[str, _Cryptoki] = {}
_initialized_in: dict[str, int] = {}  # module path -> pid that initialised it
_libs: dict[str, _pkcs11.lib] = {}


def _ensure_initialized(path: str) -> None:
    pid = os.getpid()
    if _initialized_in.get(path) == pid:
        return
    cryptoki = _cryptoki.get(path)
    if cryptoki is None:
        cryptoki = _cryptoki[path] = _Cryptoki(path)
    rv = cryptoki.initialize()
    if rv == CKR_CRYPTOKI_ALREADY_INITIALIZED and path in _initialized_in:
        # A forked child inherits the parent's initialised state; start afresh.
        cryptoki.finalize()
        rv = cryptoki.initialize()
    if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
        raise ModuleNotLoadable(path, f"C_Initialize returned 0x{rv:x}")
    _initialized_in[path] = pid


def load(path: str) -> _pkcs11.lib:
    """The module at ``path``, initialised for multi-threaded use in this process."""
    if not path:
        raise ModuleNotLoadable("", "no module path configured")
    if not os.path.exists(path):
        raise ModuleNotLoadable(path, "no such file")
    with _lock:
        lib = _libs.get(path)
        if lib is not None:
            _ensure_initialized(path)
            return lib
        _ensure_initialized(path)
        try:
            lib = _ThreadSafeLib(path)
        except pkcs11.PKCS11Error as exc:
            raise ModuleNotLoadable(path, f"{type(exc).__name__} {exc}".strip()) from None
        # Share it with code that asks python-pkcs11 directly (pyHanko does).
        pkcs11._loaded[path] = lib
        _libs[path] = lib
        return lib


class Gate:
    """Shared use of one module by the operations of a process, exclusive use by its reinitialisation.

    ``C_Finalize`` frees the sessions and objects that operations in flight on other
    threads are using; SoftHSM2 then crashes the whole process (a server worker and every
    request it holds). So operations enter the gate, and :func:`reinitialise` waits until
    none is inside and keeps new ones waiting while it runs. Entering is re-entrant per
    thread; a thread inside the gate must not reinitialise (it would wait for itself).
    """

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._inside = 0  # threads using the module now
        self._closing = False  # a reinitialisation is waiting or running
        self._depth = threading.local()

    # enter/leave run around every signature: a bare lock rather than ``with`` on the condition (~0.6 us, not 1.2)
    def enter(self) -> None:
        mine = self._depth
        depth = getattr(mine, "n", 0)
        if not depth:
            mutex = self._mutex
            mutex.acquire()
            try:
                while self._closing:
                    self._cond.wait()
                self._inside += 1
            finally:
                mutex.release()
        mine.n = depth + 1

    def leave(self) -> None:
        mine = self._depth
        depth = mine.n - 1
        mine.n = depth
        if not depth:
            with self._mutex:
                self._inside -= 1
                if self._closing and not self._inside:
                    self._cond.notify_all()

    def __enter__(self) -> Gate:
        self.enter()
        return self

    def __exit__(self, *exc) -> None:
        self.leave()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        if getattr(self._depth, "n", 0):
            raise RuntimeError("a thread using the module cannot reinitialise it")
        with self._cond:
            while self._closing:
                self._cond.wait()
            self._closing = True
            while self._inside:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closing = False
                self._cond.notify_all()


_gates: dict[str, Gate] = {}


def _reset_gates_after_fork() -> None:
    # The child has one thread: whoever was inside a gate in the parent is not here.
    for each in _gates.values():
        each._reset()


os.register_at_fork(after_in_child=_reset_gates_after_fork)


def _gate_locked(path: str) -> Gate:
    found = _gates.get(path)
    if found is None:
        found = _gates[path] = Gate()
    return found


def gate(path: str) -> Gate:
    """The gate of the module at ``path`` (one per module and process)."""
    with _lock:
        return _gate_locked(path)


_reinitialised_at: dict[str, float] = {}  # module path -> time.monotonic() of its last reinitialise()
REINITIALISE_EVERY = 1.0  # seconds: at most one C_Finalize/C_Initialize per module and process in this time


def reinitialise(path: str, *, then: Callable[[], None] | None = None) -> bool:
    """C_Finalize then C_Initialize the module in this process; False when it was done less than a second ago.

    What brings back a token that went away and came back: SoftHSM2 (like many modules)
    reads its token list only at C_Initialize, and a token whose files vanished stays
    broken in the process until then. Every session of the module in this process is
    gone afterwards; ``then`` runs before any operation may use the module again, so the
    key managers can drop their sessions (a stale handle could name a new session).
    Operations in flight finish first (:class:`Gate`).
    """
    with _lock:
        now = time.monotonic()
        if now - _reinitialised_at.get(path, -REINITIALISE_EVERY) < REINITIALISE_EVERY:
            return False
        _reinitialised_at[path] = now
        cryptoki = _cryptoki.get(path)
        if cryptoki is None:
            return False
        module_gate = _gate_locked(path)
    # Not under _lock while waiting: an operation inside the gate may be in load(), which takes it.
    with module_gate.exclusive(), _lock:
        cryptoki.finalize()
        rv = cryptoki.initialize()
        if then is not None:
            then()
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            _initialized_in.pop(path, None)  # the next load() tries again
            return False
        _initialized_in[path] = os.getpid()
        return True


def initialized_in_this_process(path: str) -> bool:
    return _initialized_in.get(path) == os.getpid()
