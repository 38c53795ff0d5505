/* The compiled fast-forward of kvdicom's header walk (kvdicom/_header/fast_header.py).

   walk(buf, base, pos, implicit) walks the top-level element headers of a dataset held in ``buf`` (the file's
   bytes from offset ``base``), from the element at file offset ``pos``, exactly as fast_header._walk_top and
   _walk_items do, and returns (stop, kept, need): ``stop`` is the file offset of the first top-level element it
   did not walk past, ``kept`` what the Python walk keeps of the elements it walked past ({tag word: (VR bytes or
   None, value bytes)}), ``need`` 1 where it stopped only for bytes past ``buf`` (a longer window from ``stop`` may
   take it further), 0 where the Python walk must decide. It stops, leaving that element to the Python walk,
   wherever the Python walk would do anything but skip or keep: an action element other than a kept one (pixel data, refused tags, the extended offset
   table), a kept element that fast_header._keep would refuse (undefined or long length, another VR, a duplicate)
   or whose value runs past ``buf``, an unknown VR, an undefined length that is not a sequence
   (explicit VR: SQ; implicit VR: what fast_header._dictionary_sq, called back, or the next item tag says), a
   malformed or too deeply nested sequence, and any element header (or item inside a sequence) that does not
   lie wholly in ``buf`` with 12 bytes to spare, the Python walk's own window rule. Stopping is always safe: the
   Python walk carries on from ``stop`` with the kept values, so both give the same layout by construction.

   It never reads outside ``buf``, and reads words in the host's byte order: fast_header uses it on little-endian
   hosts only. Built with the limited C API (abi3); setup.py builds it where a compiler is found, and without it
   kvdicom uses the Python walk alone (fast_header.compiled_walk is None). */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* fast_header.COMPILED_WALK_VERSION must equal it, else the module is not used (a stale build). */
#define WALK_VERSION 5

#define UNDEFINED 0xFFFFFFFFu
#define ITEM 0xE000FFFEu           /* (FFFE,E000) as its little-endian tag word */
#define ITEM_DELIMITER 0xE00DFFFEu /* (FFFE,E00D) */
#define SEQUENCE_DELIMITER 0xE0DDFFFEu
#define CHARSET 0x00050008u /* (0008,0005) Specific Character Set */
#define MAX_WORDS 64
#define MAX_STACK 256
#define NEED_BYTES -3 /* walk_items / implicit_is_sequence: stopped for bytes past ``buf`` */

enum { VR_UNKNOWN = 0, VR_SHORT = 1, VR_LONG = 2 };
static unsigned char vr_class[65536];
static uint32_t keep_words[MAX_WORDS], other_words[MAX_WORDS];
static uint16_t keep_vrs[MAX_WORDS];           /* the VR each kept element must have in explicit VR */
static PyObject *keep_keys[MAX_WORDS];         /* each kept word as the int the Python walk keys ``kept`` by */
static PyObject *keep_vr_objects[MAX_WORDS];   /* and its VR as bytes */
static int n_keep = -1, n_other = 0;
static uint32_t max_value_bytes = 0;
static int max_depth = 0;
static PyObject *dictionary_sq = NULL; /* fast_header._dictionary_sq: True, False or None (not in the dictionary) */

static uint32_t rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }  /* little endian hosts */
static uint16_t rd16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static int index_of(const uint32_t *words, int n, uint32_t word) {
    for (int i = 0; i < n; i++)
        if (words[i] == word) return i;
    return -1;
}

/* The explicit VR element header at ``p`` (file offset ``pos``): its value's length and offset, as
   fast_header._element reads them (a 4-byte length after the long VRs, 2 bytes after the short ones); 0 for a VR
   of neither kind, which the Python walk refuses. ``p`` must have 12 bytes. */
static inline int explicit_element(const unsigned char *p, int64_t pos, uint32_t *length, int64_t *value_at) {
    unsigned char cls = vr_class[rd16(p + 4)];
    if (cls == VR_SHORT) { *length = rd16(p + 6); *value_at = pos + 8; return 1; } /* most elements */
    if (cls == VR_LONG) { *length = rd32(p + 8); *value_at = pos + 12; return 1; }
    return 0;
}

/* Whether pydicom parses an implicit VR element of undefined length as a sequence, as
   fast_header._undefined_is_sequence decides: 1 yes, 0 no (the Python walk refuses), NEED_BYTES its next bytes lie
   outside ``buf`` (the Python walk reads them), -2 an exception is set. */
static int implicit_is_sequence(uint32_t word, const unsigned char *buf, int64_t base, int64_t len, int64_t value_at) {
    unsigned long tag = ((unsigned long)(word & 0xFFFF) << 16) | (word >> 16);
    PyObject *is_sq = PyObject_CallFunction(dictionary_sq, "k", tag);
    if (!is_sq) return -2;
    int answer;
    if (is_sq == Py_None) {
        if (value_at < base || value_at + 4 > base + len) answer = NEED_BYTES;
        else answer = rd32(buf + (value_at - base)) == ITEM;
    } else {
        answer = PyObject_IsTrue(is_sq);
        if (answer < 0) answer = -2;
    }
    Py_DECREF(is_sq);
    return answer;
}

/* Whether a (0008,0005) value lies in ``buf`` and holds no NUL before its trailing spaces and NULs. */
static int charset_plain(const unsigned char *buf, int64_t base, int64_t len, int64_t value_at, uint32_t length) {
    if (value_at < base || value_at + (int64_t)length > base + len) return 0;
    const unsigned char *v = buf + (value_at - base);
    int64_t end = length;
    while (end > 0 && (v[end - 1] == ' ' || v[end - 1] == 0)) end--;
    for (int64_t i = 0; i < end; i++)
        if (v[i] == 0) return 0;
    return 1;
}

/* Offset after the sequence delimiter of the undefined-length sequence whose items start at ``pos`` (the top
   level's depth is 1), -1 where _walk_items would raise, NEED_BYTES where it would read past ``buf``, -2 with an
   exception set. */
static int64_t walk_items(const unsigned char *buf, int64_t base, int64_t len, int64_t pos, int implicit) {
    int64_t limit = base + len - 12;
    int64_t hold_end[MAX_STACK];
    int hold_depth[MAX_STACK];
    int top = 0;
    hold_end[0] = -1; hold_depth[0] = 1;
    int in_items = 1, item_depth = 1;
    int64_t end = -1; /* -1: the item ends at its delimiter */
    for (;;) {
        if (end >= 0 && !in_items && pos >= end) {
            if (pos != end) return -1;
            in_items = 1;
            continue;
        }
        if (pos > limit || pos < base) return NEED_BYTES;
        const unsigned char *p = buf + (pos - base);
        uint32_t word = rd32(p), length = rd32(p + 4);
        if (in_items) {
            pos += 8;
            if (word == SEQUENCE_DELIMITER) {
                end = hold_end[top]; item_depth = hold_depth[top];
                if (top == 0) return pos;
                top--;
                in_items = 0;
                continue;
            }
            if (word != ITEM) return -1;
            item_depth = hold_depth[top] + 1;
            if (item_depth > max_depth) return -1;
            end = length == UNDEFINED ? -1 : pos + (int64_t)length;
            in_items = 0;
            continue;
        }
        if (word == ITEM_DELIMITER) {
            /* a length: pydicom reads the delimiter as an explicit VR element, 4 bytes longer where its "VR"
               spells a long one ("OV", "OB", ...): the Python walk decides */
            if (end >= 0 || length != 0) return -1;
            pos += 8;
            in_items = 1;
            continue;
        }
        int64_t value_at = pos + 8;
        uint16_t vr = 0;
        if (!implicit) {
            vr = rd16(p + 4);
            if (!explicit_element(p, pos, &length, &value_at)) return -1;
        }
        /* a character set in an item: pydicom's reader looks it up, and fails on a NUL inside a value; one with a
           NUL before its trailing padding (or not in the window) goes to the Python walk, which decides */
        if (word == CHARSET && length != UNDEFINED && !charset_plain(buf, base, len, value_at, length)) return -1;
        if (length == UNDEFINED) {
            if (implicit) {
                int is_sq = implicit_is_sequence(word, buf, base, len, value_at);
                if (is_sq != 1) return is_sq == 0 ? -1 : is_sq;
            } else if (vr != ('S' | 'Q' << 8)) {
                return -1;
            }
            if (top + 1 >= MAX_STACK) return -1;
            top++;
            hold_end[top] = end; hold_depth[top] = item_depth;
            in_items = 1;
            pos = value_at;
        } else {
            pos = value_at + (int64_t)length;
        }
    }
}

static PyObject *walk(PyObject *self, PyObject *args) {
    PyObject *buf_obj;
    long long base, pos;
    int implicit;
    if (!PyArg_ParseTuple(args, "SLLp", &buf_obj, &base, &pos, &implicit)) return NULL;
    if (n_keep < 0) { PyErr_SetString(PyExc_RuntimeError, "configure() was not called"); return NULL; }
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(buf_obj, &data, &len) < 0) return NULL;
    const unsigned char *buf = (const unsigned char *)data;
    int64_t limit = (int64_t)base + (int64_t)len - 12;
    PyObject *kept = PyDict_New();
    if (!kept) return NULL;
    uint64_t seen = 0;
    int need = 0; /* stopped for bytes past ``buf`` (else: for the Python walk to decide) */
    for (;;) {
        if (pos > limit || pos < base) { need = 1; break; }
        const unsigned char *p = buf + (pos - base);
        uint32_t word = rd32(p), length = rd32(p + 4);
        const unsigned char *vr = NULL;
        int64_t value_at = pos + 8;
        if (!implicit) {
            vr = p + 4;
            if (!explicit_element(p, pos, &length, &value_at)) break;
        }
        int keep = index_of(keep_words, n_keep, word);
        if (keep >= 0) {
            /* fast_header._keep's checks: a duplicate, a long value or another VR is the Python walk's to refuse */
            if (length == UNDEFINED || length > max_value_bytes || (seen >> keep & 1) ||
                (!implicit && rd16(vr) != keep_vrs[keep]))
                break;
            if (value_at + (int64_t)length > (int64_t)base + len) { need = 1; break; }
            PyObject *value = PyBytes_FromStringAndSize((const char *)buf + (value_at - base), (Py_ssize_t)length);
            PyObject *entry = value ? PyTuple_Pack(2, implicit ? Py_None : keep_vr_objects[keep], value) : NULL;
            Py_XDECREF(value);
            if (!entry || PyDict_SetItem(kept, keep_keys[keep], entry) < 0) {
                Py_XDECREF(entry);
                Py_DECREF(kept);
                return NULL;
            }
            Py_DECREF(entry);
            seen |= (uint64_t)1 << keep;
            pos = value_at + (int64_t)length;
            continue;
        }
        if (index_of(other_words, n_other, word) >= 0) break;
        if (length == UNDEFINED) {
            if (implicit) {
                int is_sq = implicit_is_sequence(word, buf, base, len, value_at);
                if (is_sq == -2) { Py_DECREF(kept); return NULL; }
                if (is_sq == NEED_BYTES) need = 1;
                if (is_sq != 1) break;
            } else if (rd16(vr) != ('S' | 'Q' << 8)) {
                break;
            }
            int64_t after = walk_items(buf, base, len, value_at, implicit);
            if (after == -2) { Py_DECREF(kept); return NULL; }
            if (after == NEED_BYTES) need = 1;
            if (after < 0) break;
            pos = after;
            continue;
        }
        pos = value_at + (int64_t)length;
    }
    return Py_BuildValue("(LNi)", (long long)pos, kept, need);
}

/* meta(buf, size): the file meta of a file with the DICM prefix, walked as fast_header._file_meta walks it, from
   ``buf`` (the file's first bytes; ``size``: the file's): (offset after it, the raw Transfer Syntax UID value or
   None), or None wherever that walk would refuse or read past ``buf`` (it then walks the file meta itself). */
static PyObject *meta(PyObject *self, PyObject *args) {
    PyObject *buf_obj;
    long long size;
    if (!PyArg_ParseTuple(args, "SL", &buf_obj, &size)) return NULL;
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(buf_obj, &data, &len) < 0) return NULL;
    const unsigned char *buf = (const unsigned char *)data;
    if (len < 132 || memcmp(buf + 128, "DICM", 4) != 0 || (int64_t)len > size) Py_RETURN_NONE;
    int64_t pos = 132, ts_at = -1;
    uint32_t ts_length = 0;
    int first = 1;
    for (;;) {
        if (pos + 8 > size || pos + 12 > (int64_t)len) Py_RETURN_NONE;
        const unsigned char *p = buf + pos;
        if (p[0] != 0x02 || p[1] != 0x00) break;
        uint32_t word = rd32(p), length;
        uint16_t vr = rd16(p + 4);
        int64_t value_at;
        if (!explicit_element(p, pos, &length, &value_at)) Py_RETURN_NONE;
        if (first && (word != 0x00000002u || vr != ('U' | 'L' << 8) || length != 4)) Py_RETURN_NONE;
        first = 0;
        if (length == UNDEFINED) Py_RETURN_NONE;
        if (word == 0x00100002u) { /* (0002,0010) */
            if (ts_at >= 0 || length > 64 || value_at + (int64_t)length > (int64_t)len) Py_RETURN_NONE;
            ts_at = value_at;
            ts_length = length;
        }
        pos = value_at + (int64_t)length;
    }
    if (ts_at < 0) return Py_BuildValue("(LO)", (long long)pos, Py_None);
    return Py_BuildValue("(Ly#)", (long long)pos, (const char *)buf + ts_at, (Py_ssize_t)ts_length);
}

static int fill_words(PyObject *obj, uint32_t *words, int *count) {
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(obj, &data, &len) < 0) return -1;
    if (len % 4 || len / 4 > MAX_WORDS) { PyErr_SetString(PyExc_ValueError, "tag words: 4 bytes each, at most 64"); return -1; }
    for (Py_ssize_t i = 0; i < len / 4; i++) words[i] = rd32((const unsigned char *)data + 4 * i);
    *count = (int)(len / 4);
    return 0;
}

static int fill_vrs(PyObject *obj, unsigned char cls) {
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(obj, &data, &len) < 0) return -1;
    if (len % 2) { PyErr_SetString(PyExc_ValueError, "VRs: 2 bytes each"); return -1; }
    for (Py_ssize_t i = 0; i < len; i += 2) vr_class[rd16((const unsigned char *)data + i)] = cls;
    return 0;
}

/* configure(keep, keep_vrs, other, short_vrs, long_vrs, max_value_bytes, max_depth, dictionary_sq): the walk's
   tables and the dictionary test, fast_header's own (one source of truth). */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *keep, *keep_vr, *other, *short_vrs, *long_vrs, *is_sq;
    unsigned long max_value;
    int depth;
    if (!PyArg_ParseTuple(args, "SSSSSkiO", &keep, &keep_vr, &other, &short_vrs, &long_vrs, &max_value, &depth,
                          &is_sq))
        return NULL;
    if (!PyCallable_Check(is_sq)) { PyErr_SetString(PyExc_TypeError, "dictionary_sq must be callable"); return NULL; }
    n_keep = -1;
    memset(vr_class, VR_UNKNOWN, sizeof vr_class);
    if (fill_words(other, other_words, &n_other) < 0 || fill_vrs(short_vrs, VR_SHORT) < 0 ||
        fill_vrs(long_vrs, VR_LONG) < 0)
        return NULL;
    int count;
    if (fill_words(keep, keep_words, &count) < 0) return NULL;
    char *vrs;
    Py_ssize_t vrs_len;
    if (PyBytes_AsStringAndSize(keep_vr, &vrs, &vrs_len) < 0) return NULL;
    if (vrs_len != 2 * (Py_ssize_t)count) { PyErr_SetString(PyExc_ValueError, "one VR a kept word"); return NULL; }
    for (int i = 0; i < count; i++) {
        keep_vrs[i] = rd16((const unsigned char *)vrs + 2 * i);
        PyObject *key = PyLong_FromUnsignedLong(keep_words[i]);
        PyObject *vr = PyBytes_FromStringAndSize(vrs + 2 * i, 2);
        if (!key || !vr) { Py_XDECREF(key); Py_XDECREF(vr); return NULL; }
        Py_XDECREF(keep_keys[i]);
        Py_XDECREF(keep_vr_objects[i]);
        keep_keys[i] = key;
        keep_vr_objects[i] = vr;
    }
    max_value_bytes = (uint32_t)max_value;
    max_depth = depth;
    PyObject *old = dictionary_sq;
    Py_INCREF(is_sq);
    dictionary_sq = is_sq;
    Py_XDECREF(old);
    n_keep = count;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "walk(buf, base, pos, implicit) -> (stop, kept, need); see the module's source."},
    {"meta", meta, METH_VARARGS, "meta(buf, size) -> (offset after the file meta, Transfer Syntax UID value) or None"},
    {"configure", configure, METH_VARARGS, "configure(keep, keep_vrs, other, short_vrs, long_vrs, max_value_bytes, max_depth, dictionary_sq)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", "kvdicom's compiled header walk", -1, methods};

PyMODINIT_FUNC PyInit__walk(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "VERSION", WALK_VERSION) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
