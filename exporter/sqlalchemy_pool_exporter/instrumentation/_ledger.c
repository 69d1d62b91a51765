/* The hot path's bookkeeping, compiled: what a checkout and a checkin write into PoolStats.
 *
 * This is the C twin of ledger.py, which documents every step and is what runs where this
 * module could not be built. Both do exactly the same writes in the same order; the test
 * suite runs against each (SQLALCHEMY_POOL_EXPORTER_PURE_PYTHON=1 selects ledger.py).
 *
 * Why C: each checkout+checkin does about twenty small updates (a pending caller's removal,
 * two histogram observations, the held entry, the peak, the garbage collector's check) and
 * in Python every one of them is several interpreted instructions; here they are a few
 * machine instructions each, which keeps the exporter within its overhead budget.
 *
 * No function here releases the GIL or runs Python code between its reads and writes
 * (keys are connection records, hashed by identity; the clock and the weak reference are
 * C functions), so each call is atomic with respect to other threads, like the single
 * statements of ledger.py. The only Python code called is the cold path:
 * PoolStats.leak_returned and the reporter, both after the updates.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "pythread.h"
#include <stddef.h>
#include "structmember.h"
#include <time.h>

static PyObject *str_connection_record, *str_fairy_ref, *str_sum, *str_peak, *str_gc_reclaimed;
static PyObject *str_leak_returned, *str_report, *str_checkin, *str_checkout, *str_held;
static PyObject *str_waiting;
static PyObject *str_leaked, *str_wait, *str_use, *str_bounds, *str_counts;
static PyObject *str_counter, *str_last, *str_locate, *str_f_lasti;
static PyObject *one; /* the int 1 */
static PyObject *perf_counter; /* time.perf_counter */

/* Where an attribute kept in __slots__ lives in instances of one type, so that it is read
 * and written the way the interpreter's own specialised instructions do, instead of
 * looking the name up on every call. Any other type, or a name that is not a plain slot
 * there, takes the generic attribute protocol. */
typedef struct {
    PyTypeObject *type; /* NULL: not resolved yet */
    Py_ssize_t offset;  /* 0: generic access for this type */
} Slot;

static void
slot_resolve(Slot *slot, PyObject *obj, PyObject *name)
{
    PyTypeObject *type = Py_TYPE(obj);
    /* Held: a type freed and another allocated at its address must not inherit it. */
    Py_INCREF(type);
    Py_XSETREF(slot->type, type);
    slot->offset = 0;
    PyObject *descr = PyObject_GetAttr((PyObject *)type, name);
    if (descr == NULL) {
        PyErr_Clear();
        return;
    }
    if (Py_TYPE(descr) == &PyMemberDescr_Type) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY) && member->offset > 0) {
            slot->offset = member->offset;
        }
    }
    Py_DECREF(descr);
}

/* obj.<name> as a new reference, or NULL with an error set. */
static PyObject *
slot_get(Slot *slot, PyObject *obj, PyObject *name)
{
    if (Py_TYPE(obj) != slot->type) {
        slot_resolve(slot, obj, name);
    }
    if (slot->offset) {
        PyObject *value = *(PyObject **)((char *)obj + slot->offset);
        if (value != NULL) {
            Py_INCREF(value);
            return value;
        }
    }
    return PyObject_GetAttr(obj, name);
}

/* obj.<name> = value; 0, or -1 with an error set. */
static int
slot_set(Slot *slot, PyObject *obj, PyObject *name, PyObject *value)
{
    if (Py_TYPE(obj) != slot->type) {
        slot_resolve(slot, obj, name);
    }
    if (slot->offset) {
        PyObject **place = (PyObject **)((char *)obj + slot->offset);
        PyObject *old = *place;
        Py_INCREF(value);
        *place = value;
        Py_XDECREF(old);
        return 0;
    }
    return PyObject_SetAttr(obj, name, value);
}

typedef struct {
    PyObject *hist;   /* the Histogram: its .sum is rewritten */
    PyObject *bounds; /* tuple of floats, strictly increasing */
    PyObject *counts; /* list of ints, len(bounds) + 1 */
    double first;
    Slot sum;
} Hist;

typedef struct {
    PyObject_HEAD
    PyObject *stats;
    PyObject *clock;
    int native_clock; /* clock is time.perf_counter, read here without a call */
    PyObject *held;
    PyObject *waiting;
    PyObject *leaked;
    Hist wait;
    Hist use;
    Slot peak;               /* PoolStats.peak */
    Slot gc_reclaimed;       /* PoolStats.gc_reclaimed */
    Slot connection_record;  /* _ConnectionFairy._connection_record */
    Slot fairy_ref;          /* _ConnectionRecord.fairy_ref */
} Ledger;

typedef struct {
    PyObject_HEAD
    Ledger *ledger;
    PyObject *forward;
    PyObject *reporter;
    PyObject *dict; /* the attributes acquire._install marks a wrapper with */
    vectorcallfunc vectorcall;
} Checkin;

static PyTypeObject LedgerType;
static int report(PyObject *reporter, PyObject *where);

/* time.perf_counter() read the way CPython reads it on Linux: CLOCK_MONOTONIC, nanoseconds
 * turned into seconds as _PyTime_AsSecondsDouble does, so that the readings mix with the
 * ones Python code takes. 0 if it could not be read (then the clock is called). */
static int
native_seconds(double *seconds)
{
#ifdef __linux__
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        volatile double d; /* as CPython: no reordering that changes the rounding */
        if (ns % 1000000000LL == 0) {
            d = (double)(ns / 1000000000LL);
        }
        else {
            d = (double)ns;
            d /= 1e9;
        }
        *seconds = d;
        return 1;
    }
#endif
    (void)seconds;
    return 0;
}

/* A reading of the ledger's clock, as a new reference. */
static PyObject *
clock_reading(Ledger *self)
{
    double seconds;
    if (self->native_clock && native_seconds(&seconds)) {
        return PyFloat_FromDouble(seconds);
    }
    return PyObject_CallNoArgs(self->clock);
}

static int
hist_init(Hist *h, PyObject *hist)
{
    if ((h->bounds = PyObject_GetAttr(hist, str_bounds)) == NULL ||
        (h->counts = PyObject_GetAttr(hist, str_counts)) == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(h->bounds) || PyTuple_GET_SIZE(h->bounds) == 0 ||
        !PyList_CheckExact(h->counts) ||
        PyList_GET_SIZE(h->counts) != PyTuple_GET_SIZE(h->bounds) + 1) {
        PyErr_SetString(PyExc_TypeError,
                        "histogram needs a tuple of bounds and a list of len(bounds) + 1 counts");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(h->bounds); i++) {
        if (!PyFloat_CheckExact(PyTuple_GET_ITEM(h->bounds, i))) {
            PyErr_SetString(PyExc_TypeError, "histogram bounds must be floats");
            return -1;
        }
    }
    h->first = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(h->bounds, 0));
    Py_INCREF(hist);
    h->hist = hist;
    return 0;
}

/* One observation: the bucket bisect.bisect_left picks (the first bound >= value), + sum. */
static int
observe(Hist *h, double value)
{
    Py_ssize_t lo = 0;
    if (!(value <= h->first)) {
        Py_ssize_t hi = PyTuple_GET_SIZE(h->bounds);
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(h->bounds, mid)) < value) {
                lo = mid + 1;
            }
            else {
                hi = mid;
            }
        }
    }
    if (lo >= PyList_GET_SIZE(h->counts)) { /* the list was shortened behind our back */
        PyErr_SetString(PyExc_IndexError, "histogram counts shorter than its bounds");
        return -1;
    }
    PyObject *count = PyNumber_Add(PyList_GET_ITEM(h->counts, lo), one);
    if (count == NULL) {
        return -1;
    }
    PyList_SetItem(h->counts, lo, count); /* steals count, releases the old one */
    PyObject *sum = slot_get(&h->sum, h->hist, str_sum);
    if (sum == NULL) {
        return -1;
    }
    double total = PyFloat_AsDouble(sum);
    Py_DECREF(sum);
    if (total == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    sum = PyFloat_FromDouble(total + value);
    if (sum == NULL) {
        return -1;
    }
    int rc = slot_set(&h->sum, h->hist, str_sum, sum);
    Py_DECREF(sum);
    return rc;
}

/* owner.<name> += 1 */
static int
increment(Slot *slot, PyObject *owner, PyObject *name)
{
    PyObject *value = slot_get(slot, owner, name);
    if (value == NULL) {
        return -1;
    }
    PyObject *more = PyNumber_Add(value, one);
    Py_DECREF(value);
    if (more == NULL) {
        return -1;
    }
    int rc = slot_set(slot, owner, name, more);
    Py_DECREF(more);
    return rc;
}

/* dict.pop(key, None) as a new reference, or NULL with an error set, or NULL if absent. */
static PyObject *
pop(PyObject *dict, PyObject *key)
{
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL) {
        return NULL;
    }
    Py_INCREF(value);
    if (PyDict_DelItem(dict, key) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

static int
Ledger_init(Ledger *self, PyObject *args, PyObject *kwds)
{
    PyObject *stats, *clock, *wait = NULL, *use = NULL;
    static char *kwlist[] = {"stats", "clock", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Ledger", kwlist, &stats, &clock)) {
        return -1;
    }
    if (self->stats != NULL) {
        PyErr_SetString(PyExc_TypeError, "Ledger is initialised once");
        return -1;
    }
    Py_INCREF(stats);
    self->stats = stats;
    Py_INCREF(clock);
    self->clock = clock;
    double probe;
    self->native_clock = clock == perf_counter && native_seconds(&probe);
    if ((self->held = PyObject_GetAttr(stats, str_held)) == NULL ||
        (self->waiting = PyObject_GetAttr(stats, str_waiting)) == NULL ||
        (self->leaked = PyObject_GetAttr(stats, str_leaked)) == NULL) {
        return -1;
    }
    if (!PyDict_CheckExact(self->held) || !PyDict_CheckExact(self->leaked) ||
        !PyList_CheckExact(self->waiting)) {
        PyErr_SetString(PyExc_TypeError, "stats.held and stats.leaked must be dicts, "
                                         "stats.waiting a list");
        return -1;
    }
    int rc = -1;
    if ((wait = PyObject_GetAttr(stats, str_wait)) != NULL &&
        (use = PyObject_GetAttr(stats, str_use)) != NULL && hist_init(&self->wait, wait) == 0 &&
        hist_init(&self->use, use) == 0) {
        rc = 0;
    }
    Py_XDECREF(wait);
    Py_XDECREF(use);
    return rc;
}

/* waiting.remove(start): the first equal value, as list.remove does. */
static int
remove_waiting(Ledger *self, PyObject *start)
{
    PyObject *waiting = self->waiting;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(waiting); i++) {
        PyObject *item = PyList_GET_ITEM(waiting, i);
        int equal = item == start;
        if (!equal) {
            Py_INCREF(item);
            equal = PyObject_RichCompareBool(item, start, Py_EQ);
            Py_DECREF(item);
            if (equal < 0) {
                return -1;
            }
        }
        if (equal) {
            return PyList_SetSlice(waiting, i, i + 1, NULL);
        }
    }
    PyErr_SetString(PyExc_ValueError, "list.remove(x): x not in list");
    return -1;
}

/* Book a checkout; 0, or -1 with an error set. */
static int
checked_out(Ledger *self, PyObject *fairy, PyObject *start, PyObject *now, PyObject *code,
            PyObject *lasti)
{
    if (remove_waiting(self, start) < 0) {
        return -1;
    }
    double begun = PyFloat_AsDouble(start);
    if (begun == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    double got = PyFloat_AsDouble(now);
    if (got == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *rec = slot_get(&self->connection_record, fairy, str_connection_record);
    if (rec == NULL) {
        return -1;
    }
    PyObject *entry = NULL;
    PyObject *ident = NULL;
    PyObject *ref = NULL;
    int rc = -1;
    if (observe(&self->wait, got - begun) < 0) {
        goto done;
    }
    ref = slot_get(&self->fairy_ref, rec, str_fairy_ref);
    ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (ref == NULL || ident == NULL) {
        goto done;
    }
    entry = PyTuple_Pack(5, now, code, lasti, ident, ref);
    if (entry == NULL || PyDict_SetItem(self->held, rec, entry) < 0) {
        goto done;
    }
    PyObject *peak = slot_get(&self->peak, self->stats, str_peak);
    if (peak == NULL) {
        goto done;
    }
    Py_ssize_t highest = PyLong_AsSsize_t(peak);
    Py_DECREF(peak);
    if (highest == -1 && PyErr_Occurred()) {
        goto done;
    }
    Py_ssize_t size = PyDict_GET_SIZE(self->held);
    rc = 0;
    if (size > highest) {
        PyObject *value = PyLong_FromSsize_t(size);
        rc = value == NULL ? -1 : slot_set(&self->peak, self->stats, str_peak, value);
        Py_XDECREF(value);
    }
done:
    Py_DECREF(rec);
    Py_XDECREF(ref);
    Py_XDECREF(ident);
    Py_XDECREF(entry);
    return rc;
}

static PyObject *
Ledger_checked_out(Ledger *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "checked_out(fairy, start, now, code, lasti) takes 5 arguments");
        return NULL;
    }
    if (self->stats == NULL) {
        PyErr_SetString(PyExc_TypeError, "Ledger was not initialised");
        return NULL;
    }
    if (checked_out(self, args[0], args[1], args[2], args[3], args[4]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* End of the checkout of ``rec`` in the stats; 0, or -1 with an error set. */
static int
checked_in(Ledger *self, PyObject *rec)
{
    if (self->stats == NULL) {
        PyErr_SetString(PyExc_TypeError, "Ledger was not initialised");
        return -1;
    }
    PyObject *entry = pop(self->held, rec);
    if (entry == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *now = NULL, *age = NULL, *proxy = NULL, *flagged = NULL;
    int rc = -1;
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 5) {
        PyErr_SetString(PyExc_TypeError, "held entry is not a 5-tuple");
        goto done;
    }
    double seconds, taken = 0.0;
    PyObject *since = PyTuple_GET_ITEM(entry, 0);
    if (self->native_clock && PyFloat_CheckExact(since) && native_seconds(&taken)) {
        seconds = taken - PyFloat_AS_DOUBLE(since); /* as the float subtraction does */
    }
    else {
        now = PyObject_CallNoArgs(self->clock);
        if (now == NULL) {
            goto done;
        }
        age = PyNumber_Subtract(now, since);
        if (age == NULL) {
            goto done;
        }
        seconds = PyFloat_AsDouble(age);
        if (seconds == -1.0 && PyErr_Occurred()) {
            goto done;
        }
    }
    if (observe(&self->use, seconds) < 0) {
        goto done;
    }
    /* The proxy is gone: the garbage collector is returning what the app forgot. */
    proxy = PyObject_CallNoArgs(PyTuple_GET_ITEM(entry, 4));
    if (proxy == NULL) {
        goto done;
    }
    int reclaimed = proxy == Py_None;
    Py_CLEAR(proxy); /* never hold the app's connection longer than this check */
    if (reclaimed && increment(&self->gc_reclaimed, self->stats, str_gc_reclaimed) < 0) {
        goto done;
    }
    if (PyDict_GET_SIZE(self->leaked) > 0) {
        flagged = pop(self->leaked, rec);
        if (flagged == NULL && PyErr_Occurred()) {
            goto done;
        }
        if (flagged == entry) {
            if (age == NULL && (age = PyFloat_FromDouble(seconds)) == NULL) {
                goto done;
            }
            PyObject *result = PyObject_CallMethodObjArgs(
                self->stats, str_leak_returned, entry, age, reclaimed ? Py_True : Py_False,
                NULL);
            if (result == NULL) {
                goto done;
            }
            Py_DECREF(result);
        }
    }
    rc = 0;
done:
    Py_DECREF(entry);
    Py_XDECREF(now);
    Py_XDECREF(age);
    Py_XDECREF(flagged);
    return rc;
}

static PyObject *
Checkin_vectorcall(Checkin *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "end of checkout takes one connection record");
        return NULL;
    }
    /* Never let bookkeeping reach the app: report it, as ledger.py does. */
    if (checked_in(self->ledger, args[0]) < 0 && report(self->reporter, str_checkin) < 0) {
        return NULL;
    }
    return PyObject_Vectorcall(self->forward, args, 1, NULL);
}

static PyObject *
Checkin_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *ledger, *forward, *reporter;
    static char *kwlist[] = {"ledger", "forward", "reporter", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO:Checkin", kwlist, &LedgerType, &ledger,
                                     &forward, &reporter)) {
        return NULL;
    }
    Checkin *self = (Checkin *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(ledger);
    self->ledger = (Ledger *)ledger;
    Py_INCREF(forward);
    self->forward = forward;
    Py_INCREF(reporter);
    self->reporter = reporter;
    self->vectorcall = (vectorcallfunc)Checkin_vectorcall;
    return (PyObject *)self;
}


typedef struct {
    PyObject_HEAD
    Ledger *ledger;
    PyObject *checkout;    /* called with target: what pool.connect() would call */
    PyObject *target;
    PyObject *finder;      /* sites.SiteFinder, or None: no checkout sites */
    PyObject *getframe;    /* sys._getframe */
    PyObject *wait_failed; /* acquire._wait_failed(stats, start, exc, reporter) */
    PyObject *reporter;
    int reentrant;         /* a SingletonThreadPool: the same proxy may come back */
    Slot counter;          /* _ConnectionFairy._counter */
    Slot last;             /* SiteFinder.last */
    PyObject *dict;
    vectorcallfunc vectorcall;
} Checkout;

/* Report the error set (an Exception) as acquire's wrappers do; -1 if it must propagate. */
static int
report(PyObject *reporter, PyObject *where)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    PyObject *result =
        PyObject_CallMethodObjArgs(reporter, str_report, where, value ? value : Py_None, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* The checkout site as (code, lasti) in *code and *lasti (new references); -1 on error.
 * Mirrors the Python connect wrapper: the frame where the app was found last time, if it
 * still runs the same code, else SiteFinder.locate(). No frame is kept. */
static int
find_site(Checkout *self, PyObject **code, PyObject **lasti)
{
    PyObject *last = slot_get(&self->last, self->finder, str_last);
    if (last == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(last) || PyTuple_GET_SIZE(last) != 2) {
        Py_DECREF(last);
        PyErr_SetString(PyExc_TypeError, "SiteFinder.last is not a (depth, code) pair");
        return -1;
    }
    Py_ssize_t depth = PyLong_AsSsize_t(PyTuple_GET_ITEM(last, 0));
    if (depth == -1 && PyErr_Occurred()) {
        Py_DECREF(last);
        return -1;
    }
    /* Depths count from the Python wrapper's frame; this wrapper has none. */
    PyObject *level = PyLong_FromSsize_t(depth - 1);
    PyObject *frame = level == NULL ? NULL : PyObject_CallOneArg(self->getframe, level);
    Py_XDECREF(level);
    if (frame == NULL) {
        Py_DECREF(last);
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            return -1;
        }
        PyErr_Clear(); /* a shallower stack than last time */
    }
    else {
        PyObject *found = (PyObject *)PyFrame_GetCode((PyFrameObject *)frame);
        int same = found == PyTuple_GET_ITEM(last, 1);
        Py_DECREF(found);
        if (same) {
            *code = PyTuple_GET_ITEM(last, 1);
            Py_INCREF(*code);
            Py_DECREF(last);
#if PY_VERSION_HEX >= 0x030B0000
            *lasti = PyLong_FromLong(PyFrame_GetLasti((PyFrameObject *)frame));
#else
            *lasti = PyObject_GetAttr(frame, str_f_lasti);
#endif
            Py_DECREF(frame);
            if (*lasti == NULL) {
                Py_CLEAR(*code);
                return -1;
            }
            return 0;
        }
        Py_DECREF(frame);
        Py_DECREF(last);
    }
    PyObject *site = PyObject_CallMethodNoArgs(self->finder, str_locate);
    if (site == NULL) {
        return -1;
    }
    if (!PyTuple_Check(site) || PyTuple_GET_SIZE(site) != 2) {
        Py_DECREF(site);
        PyErr_SetString(PyExc_TypeError, "SiteFinder.locate() did not return a pair");
        return -1;
    }
    *code = PyTuple_GET_ITEM(site, 0);
    *lasti = PyTuple_GET_ITEM(site, 1);
    Py_INCREF(*code);
    Py_INCREF(*lasti);
    Py_DECREF(site);
    return 0;
}

/* pool.connect(): the Python connect wrapper of acquire.py, step by step. */
static PyObject *
Checkout_vectorcall(Checkout *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "connect() takes no arguments");
        return NULL;
    }
    Ledger *ledger = self->ledger;
    if (ledger->stats == NULL) {
        PyErr_SetString(PyExc_TypeError, "Ledger was not initialised");
        return NULL;
    }
    /* A pending caller is its start time in ``waiting`` (see PoolStats.waiting). */
    PyObject *start = clock_reading(ledger);
    if (start == NULL) {
        return NULL;
    }
    if (PyList_Append(ledger->waiting, start) < 0) {
        Py_DECREF(start);
        return NULL;
    }
    PyObject *fairy = PyObject_CallOneArg(self->checkout, self->target);
    if (fairy == NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL) {
            PyException_SetTraceback(value, traceback);
        }
        PyObject *result = PyObject_CallFunctionObjArgs(
            self->wait_failed, ledger->stats, start, value ? value : Py_None, self->reporter,
            NULL);
        Py_DECREF(start);
        if (result == NULL) { /* as in Python: its own error replaces the app's */
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            return NULL;
        }
        Py_DECREF(result);
        PyErr_Restore(type, value, traceback);
        return NULL;
    }
    PyObject *now = clock_reading(ledger);
    PyObject *code = NULL, *lasti = NULL;
    if (now == NULL) {
        goto failed;
    }
    if (self->reentrant) {
        PyObject *counter = slot_get(&self->counter, fairy, str_counter);
        if (counter == NULL) {
            goto site_failed;
        }
        int again = PyObject_RichCompareBool(counter, one, Py_NE);
        Py_DECREF(counter);
        if (again < 0) {
            goto site_failed;
        }
        if (again) {
            /* A re-entrant checkout hands back a proxy that is already checked out:
             * not a new checkout. */
            if (remove_waiting(ledger, start) < 0) {
                goto site_failed;
            }
            Py_DECREF(start);
            Py_DECREF(now);
            return fairy;
        }
    }
    if (self->finder != Py_None && find_site(self, &code, &lasti) < 0) {
        goto site_failed;
    }
    goto book;
site_failed:
    if (report(self->reporter, str_checkout) < 0) {
        goto failed;
    }
book:
    if (code == NULL) {
        code = Py_None;
        Py_INCREF(code);
        lasti = PyLong_FromLong(0);
        if (lasti == NULL) {
            goto failed;
        }
    }
    /* Ends the pending wait, observes it, holds the record, raises the peak. */
    if (checked_out(ledger, fairy, start, now, code, lasti) < 0 &&
        report(self->reporter, str_checkout) < 0) {
        goto failed;
    }
    Py_DECREF(start);
    Py_DECREF(now);
    Py_DECREF(code);
    Py_DECREF(lasti);
    return fairy;
failed: /* an error that must reach the app (not an Exception): the proxy goes too */
    Py_DECREF(fairy);
    Py_DECREF(start);
    Py_XDECREF(now);
    Py_XDECREF(code);
    Py_XDECREF(lasti);
    return NULL;
}

static PyObject *
Checkout_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *ledger, *checkout, *target, *finder, *getframe, *wait_failed, *reporter;
    int reentrant;
    static char *kwlist[] = {"ledger",      "checkout", "target",    "finder", "getframe",
                             "wait_failed", "reporter", "reentrant", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOOOOp:Checkout", kwlist, &LedgerType,
                                     &ledger, &checkout, &target, &finder, &getframe,
                                     &wait_failed, &reporter, &reentrant)) {
        return NULL;
    }
    Checkout *self = (Checkout *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(ledger);
    self->ledger = (Ledger *)ledger;
    Py_INCREF(checkout);
    self->checkout = checkout;
    Py_INCREF(target);
    self->target = target;
    Py_INCREF(finder);
    self->finder = finder;
    Py_INCREF(getframe);
    self->getframe = getframe;
    Py_INCREF(wait_failed);
    self->wait_failed = wait_failed;
    Py_INCREF(reporter);
    self->reporter = reporter;
    self->reentrant = reentrant;
    self->vectorcall = (vectorcallfunc)Checkout_vectorcall;
    return (PyObject *)self;
}

static int
Checkout_traverse(Checkout *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    Py_VISIT(self->checkout);
    Py_VISIT(self->target);
    Py_VISIT(self->finder);
    Py_VISIT(self->getframe);
    Py_VISIT(self->wait_failed);
    Py_VISIT(self->reporter);
    Py_VISIT(self->counter.type);
    Py_VISIT(self->last.type);
    Py_VISIT(self->dict);
    return 0;
}

static int
Checkout_clear(Checkout *self)
{
    Py_CLEAR(self->ledger);
    Py_CLEAR(self->checkout);
    Py_CLEAR(self->target);
    Py_CLEAR(self->finder);
    Py_CLEAR(self->getframe);
    Py_CLEAR(self->wait_failed);
    Py_CLEAR(self->reporter);
    Py_CLEAR(self->counter.type);
    Py_CLEAR(self->last.type);
    Py_CLEAR(self->dict);
    return 0;
}

static void
Checkout_dealloc(Checkout *self)
{
    PyObject_GC_UnTrack(self);
    Checkout_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
hist_traverse(Hist *h, visitproc visit, void *arg)
{
    Py_VISIT(h->sum.type);
    Py_VISIT(h->hist);
    Py_VISIT(h->bounds);
    Py_VISIT(h->counts);
    return 0;
}

static void
hist_clear(Hist *h)
{
    Py_CLEAR(h->sum.type);
    Py_CLEAR(h->hist);
    Py_CLEAR(h->bounds);
    Py_CLEAR(h->counts);
}

static int
Ledger_traverse(Ledger *self, visitproc visit, void *arg)
{
    Py_VISIT(self->stats);
    Py_VISIT(self->clock);
    Py_VISIT(self->held);
    Py_VISIT(self->waiting);
    Py_VISIT(self->leaked);
    hist_traverse(&self->wait, visit, arg);
    hist_traverse(&self->use, visit, arg);
    Py_VISIT(self->peak.type);
    Py_VISIT(self->gc_reclaimed.type);
    Py_VISIT(self->connection_record.type);
    Py_VISIT(self->fairy_ref.type);
    return 0;
}

static int
Ledger_clear(Ledger *self)
{
    Py_CLEAR(self->stats);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->held);
    Py_CLEAR(self->waiting);
    Py_CLEAR(self->leaked);
    hist_clear(&self->wait);
    hist_clear(&self->use);
    Py_CLEAR(self->peak.type);
    Py_CLEAR(self->gc_reclaimed.type);
    Py_CLEAR(self->connection_record.type);
    Py_CLEAR(self->fairy_ref.type);
    return 0;
}

static void
Ledger_dealloc(Ledger *self)
{
    PyObject_GC_UnTrack(self);
    Ledger_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Checkin_traverse(Checkin *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    Py_VISIT(self->forward);
    Py_VISIT(self->reporter);
    Py_VISIT(self->dict);
    return 0;
}

static int
Checkin_clear(Checkin *self)
{
    Py_CLEAR(self->ledger);
    Py_CLEAR(self->forward);
    Py_CLEAR(self->reporter);
    Py_CLEAR(self->dict);
    return 0;
}

static void
Checkin_dealloc(Checkin *self)
{
    PyObject_GC_UnTrack(self);
    Checkin_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Ledger_methods[] = {
    {"checked_out", (PyCFunction)(void (*)(void))Ledger_checked_out, METH_FASTCALL,
     "Book a checkout: its wait, its held entry and the peak."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LedgerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sqlalchemy_pool_exporter.instrumentation._ledger.Ledger",
    .tp_basicsize = sizeof(Ledger),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What a checkout and a checkin write into one pool's PoolStats.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ledger_init,
    .tp_traverse = (traverseproc)Ledger_traverse,
    .tp_clear = (inquiry)Ledger_clear,
    .tp_dealloc = (destructor)Ledger_dealloc,
    .tp_methods = Ledger_methods,
};

static PyMemberDef Checkin_members[] = {
    {"forward", T_OBJECT, offsetof(Checkin, forward), READONLY, "What the record goes to next."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CheckinType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sqlalchemy_pool_exporter.instrumentation._ledger.Checkin",
    .tp_basicsize = sizeof(Checkin),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Ends a checkout in the ledger, then calls ``forward(record)``.",
    .tp_new = Checkin_new,
    .tp_traverse = (traverseproc)Checkin_traverse,
    .tp_clear = (inquiry)Checkin_clear,
    .tp_dealloc = (destructor)Checkin_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Checkin, vectorcall),
    .tp_dictoffset = offsetof(Checkin, dict),
    .tp_members = Checkin_members,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
};

static PyMemberDef Checkout_members[] = {
    {"checkout", T_OBJECT, offsetof(Checkout, checkout), READONLY, "Called with target."},
    {"target", T_OBJECT, offsetof(Checkout, target), READONLY, "What checkout is called with."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CheckoutType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sqlalchemy_pool_exporter.instrumentation._ledger.Checkout",
    .tp_basicsize = sizeof(Checkout),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "pool.connect(): times the checkout, finds its site, books it in the ledger.",
    .tp_new = Checkout_new,
    .tp_traverse = (traverseproc)Checkout_traverse,
    .tp_clear = (inquiry)Checkout_clear,
    .tp_dealloc = (destructor)Checkout_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Checkout, vectorcall),
    .tp_dictoffset = offsetof(Checkout, dict),
    .tp_members = Checkout_members,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sqlalchemy_pool_exporter.instrumentation._ledger",
    .m_doc = "Compiled twin of sqlalchemy_pool_exporter.instrumentation.ledger.",
    .m_size = -1,
};

#define INTERN(var, text)                                 \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
    return NULL

PyMODINIT_FUNC
PyInit__ledger(void)
{
    INTERN(str_connection_record, "_connection_record");
    INTERN(str_fairy_ref, "fairy_ref");
    INTERN(str_sum, "sum");
    INTERN(str_peak, "peak");
    INTERN(str_gc_reclaimed, "gc_reclaimed");
    INTERN(str_leak_returned, "leak_returned");
    INTERN(str_report, "report");
    INTERN(str_checkin, "checkin");
    INTERN(str_checkout, "checkout");
    INTERN(str_held, "held");
    INTERN(str_waiting, "waiting");
    INTERN(str_leaked, "leaked");
    INTERN(str_wait, "wait");
    INTERN(str_use, "use");
    INTERN(str_bounds, "bounds");
    INTERN(str_counts, "counts");
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return NULL;
    }
    perf_counter = PyObject_GetAttrString(time_module, "perf_counter");
    Py_DECREF(time_module);
    if (perf_counter == NULL) {
        return NULL;
    }
    INTERN(str_counter, "_counter");
    INTERN(str_last, "last");
    INTERN(str_locate, "locate");
    INTERN(str_f_lasti, "f_lasti");
    if ((one = PyLong_FromLong(1)) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&LedgerType) < 0 || PyType_Ready(&CheckinType) < 0 ||
        PyType_Ready(&CheckoutType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&LedgerType);
    Py_INCREF(&CheckinType);
    Py_INCREF(&CheckoutType);
    if (PyModule_AddObject(m, "Ledger", (PyObject *)&LedgerType) < 0 ||
        PyModule_AddObject(m, "Checkin", (PyObject *)&CheckinType) < 0 ||
        PyModule_AddObject(m, "Checkout", (PyObject *)&CheckoutType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
