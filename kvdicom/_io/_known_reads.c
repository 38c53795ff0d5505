/* The compiled per-slice read of a series (kvdicom/_io/known_reads.py): each file's known pixel range into its
   slot of one host buffer, with the identity checks of kvdicom._io.host_read.read_known, the GIL released for
   the whole run of files.

   read(items, address, capacity) -> count. ``items`` is a list of tuples (path bytes, file offset, nbytes,
   buffer offset, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns); ``address`` and ``capacity`` the host
   buffer's first byte and length (the caller holds the buffer). For each item in turn: ``stat`` the path (a
   regular file with the header's identity, so nothing else, FIFO or device, is opened), open it
   (O_RDONLY | O_NONBLOCK | O_CLOEXEC), ``fstat`` (the same file), ``pread`` the range whole, ``fstat`` again (not
   changed during the read), close. It stops at the first item where anything differs or fails and returns how
   many items were read whole before it: the caller reads that item again through the Python path, which raises
   the error naming the file and the problem (or reads it, where the file was only passing through a change).
   A stopped item's slot may hold partial bytes; the caller never returns them.

   Built with the limited C API (abi3), optional as the header walk is (setup.py); without it the Python path
   reads every file (kvdicom._io.known_reads.compiled is None). */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* stat and fstat through syscall(): glibc 2.33 gave them symbols of their own (stat64@GLIBC_2.33), so a build
   that called them would not load on an older glibc, where a build made on the CPU machine may be carried (the
   header walk's .so asks for glibc 2.2.5 only). The kernel's struct stat is glibc's on x86-64 and aarch64. */
#if defined(SYS_newfstatat) && defined(SYS_fstat)
static int stat_path(const char *path, struct stat *st) { return (int)syscall(SYS_newfstatat, AT_FDCWD, path, st, 0); }
static int stat_fd(int fd, struct stat *st) { return (int)syscall(SYS_fstat, fd, st); }
#else
static int stat_path(const char *path, struct stat *st) { return stat(path, st); }
static int stat_fd(int fd, struct stat *st) { return fstat(fd, st); }
#endif

/* known_reads.COMPILED_VERSION must equal it, else the module is not used (a stale build). */
#define READS_VERSION 1

typedef struct {
    const char *path;
    unsigned long long offset, nbytes, start, dev, ino, size;
    long long mtime_ns, ctime_ns;
} item_t;

static long long nanoseconds(struct timespec t) { return (long long)t.tv_sec * 1000000000LL + t.tv_nsec; }

static int same_file(const struct stat *st, const item_t *it) {
    return S_ISREG(st->st_mode) && (unsigned long long)st->st_dev == it->dev &&
           (unsigned long long)st->st_ino == it->ino && (unsigned long long)st->st_size == it->size &&
           nanoseconds(st->st_mtim) == it->mtime_ns && nanoseconds(st->st_ctim) == it->ctime_ns;
}

/* 1 where the item's range was read whole from the file its identity names, else 0 (errno is not kept: the
   caller's Python read says what went wrong). */
static int read_one(const item_t *it, unsigned char *base) {
    struct stat st;
    if (stat_path(it->path, &st) != 0 || !same_file(&st, it)) return 0;
    int fd = open(it->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    int ok = 0;
    if (stat_fd(fd, &st) == 0 && same_file(&st, it)) {
        unsigned long long done = 0;
        while (done < it->nbytes) {
            ssize_t got = pread(fd, base + it->start + done, (size_t)(it->nbytes - done), (off_t)(it->offset + done));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) break;
            done += (unsigned long long)got;
        }
        ok = done == it->nbytes && stat_fd(fd, &st) == 0 && same_file(&st, it);
    }
    close(fd);
    return ok;
}

static int parse_item(PyObject *tuple, item_t *it) {
    if (!PyTuple_Check(tuple) || PyTuple_Size(tuple) != 9) {
        PyErr_SetString(PyExc_TypeError, "an item is a tuple of 9: path bytes, offset, nbytes, start, and the file id");
        return -1;
    }
    PyObject *path = PyTuple_GetItem(tuple, 0);
    if (!PyBytes_Check(path)) {
        PyErr_SetString(PyExc_TypeError, "an item's path must be bytes");
        return -1;
    }
    char *chars;
    if (PyBytes_AsStringAndSize(path, &chars, NULL) < 0) return -1; /* ValueError for an embedded NUL */
    it->path = chars;
    unsigned long long *fields[] = {&it->offset, &it->nbytes, &it->start, &it->dev, &it->ino, &it->size};
    for (int k = 0; k < 6; k++) {
        *fields[k] = PyLong_AsUnsignedLongLong(PyTuple_GetItem(tuple, k + 1));
        if (PyErr_Occurred()) return -1;
    }
    it->mtime_ns = PyLong_AsLongLong(PyTuple_GetItem(tuple, 7));
    it->ctime_ns = PyLong_AsLongLong(PyTuple_GetItem(tuple, 8));
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *read_items(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *items;
    unsigned long long address, capacity;
    if (!PyArg_ParseTuple(args, "O!KK", &PyList_Type, &items, &address, &capacity)) return NULL;
    Py_ssize_t n = PyList_Size(items);
    item_t *parsed = n > 0 ? malloc(sizeof(item_t) * (size_t)n) : NULL;
    PyObject **held = n > 0 ? malloc(sizeof(PyObject *) * (size_t)n) : NULL;
    if (n > 0 && (!parsed || !held)) {
        free(parsed);
        free(held);
        return PyErr_NoMemory();
    }
    Py_ssize_t kept = 0;
    for (; kept < n; kept++) {
        PyObject *tuple = PyList_GetItem(items, kept);
        if (parse_item(tuple, &parsed[kept]) < 0) break;
        if (parsed[kept].start > capacity || parsed[kept].nbytes > capacity - parsed[kept].start) {
            PyErr_SetString(PyExc_ValueError, "an item's slot runs past the buffer");
            break;
        }
        Py_INCREF(tuple); /* keeps its path's bytes alive while the GIL is released */
        held[kept] = tuple;
    }
    Py_ssize_t count = 0;
    if (kept == n) {
        unsigned char *base = (unsigned char *)(uintptr_t)address;
        Py_BEGIN_ALLOW_THREADS
        while (count < n && read_one(&parsed[count], base)) count++;
        Py_END_ALLOW_THREADS
    }
    for (Py_ssize_t k = 0; k < kept; k++) Py_DECREF(held[k]);
    free(parsed);
    free(held);
    if (kept != n) return NULL;
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"read", read_items, METH_VARARGS, "read(items, address, capacity) -> items read whole; see the module's source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_known_reads", "kvdicom's compiled series reads", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__known_reads(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "VERSION", READS_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
