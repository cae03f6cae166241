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

import ctypes
import os
import threading

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


def initialized_in_this_process(path: str) -> bool:
    return _initialized_in.get(path) == os.getpid()
