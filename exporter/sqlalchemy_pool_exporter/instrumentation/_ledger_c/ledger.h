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
 *
 * Sources: ledger.h (what the files share, and the inline helpers of the hot path),
 * slots.c (attributes read at their offsets), histogram.c (one observation), ledger.c
 * (the Ledger type: checked_out and checked_in), checkin.c and checkout.c (the two
 * wrappers), module.c (the module and its interned names).
 */
#ifndef SQLALCHEMY_POOL_EXPORTER_LEDGER_H
#define SQLALCHEMY_POOL_EXPORTER_LEDGER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "pythread.h"
#include <stddef.h>
#include "structmember.h"
#include <time.h>

#if defined(__GNUC__)
/* Shared between these files only: nothing but PyInit__ledger leaves the module. */
#pragma GCC visibility push(hidden)
#endif

extern PyObject *str_connection_record, *str_fairy_ref, *str_sum, *str_peak, *str_gc_reclaimed;
extern PyObject *str_leak_returned, *str_report, *str_checkin, *str_checkout, *str_held;
extern PyObject *str_waiting;
extern PyObject *str_leaked, *str_wait, *str_use, *str_bounds, *str_counts;
extern PyObject *str_counter, *str_last, *str_locate, *str_f_lasti;
extern PyObject *one;          /* the int 1 */
extern PyObject *perf_counter; /* time.perf_counter */

/* Where an attribute kept in __slots__ lives in instances of one type, so that it is read
 * and written the way the interpreter's own specialised instructions do, instead of
 * looking the name up on every call. Any other type, or a name that is not a plain slot
 * there, takes the generic attribute protocol. */
typedef struct {
    PyTypeObject *type; /* NULL: not resolved yet */
    Py_ssize_t offset;  /* 0: generic access for this type */
} Slot;

void slot_resolve(Slot *slot, PyObject *obj, PyObject *name);

/* obj.<name> as a new reference, or NULL with an error set. */
static inline PyObject *
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
static inline int
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

/* time.perf_counter() read the way CPython reads it on Linux: CLOCK_MONOTONIC, nanoseconds
 * turned into seconds as _PyTime_AsSecondsDouble does, so that the readings mix with the
 * ones Python code takes. 0 if it could not be read (then the clock is called). */
static inline int
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
static inline PyObject *
clock_reading(Ledger *self)
{
    double seconds;
    if (self->native_clock && native_seconds(&seconds)) {
        return PyFloat_FromDouble(seconds);
    }
    return PyObject_CallNoArgs(self->clock);
}

extern PyTypeObject LedgerType, CheckinType, CheckoutType;

int hist_init(Hist *h, PyObject *hist);
int observe(Hist *h, double value);
int hist_traverse(Hist *h, visitproc visit, void *arg);
void hist_clear(Hist *h);
int remove_waiting(Ledger *self, PyObject *start);
int checked_out(Ledger *self, PyObject *fairy, PyObject *start, PyObject *now, PyObject *code,
                PyObject *lasti);
int checked_in(Ledger *self, PyObject *rec);
int report(PyObject *reporter, PyObject *where);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
